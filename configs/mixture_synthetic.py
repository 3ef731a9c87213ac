"""One run of the data-mixture study: a tiny SASRec on the synthetic world's tabs at one mixture.

Domains are the world's 4 tabs: each session happens in one tab, and in tab k an event's item is
uniformly random with probability tab_noise[k] = 0.05, 0.3, 0.55, 0.8 (known), otherwise it follows
the user's interests and the topic's item chain; the tabs' natural shares are about 0.1, 0.2, 0.3,
0.4 (tab_alpha = 1, 2, 3, 4: the noisiest tab is the most common). The mixture is the share of the
training *targets* drawn from each tab (`data.domains`, recjax/data/domains.py) at a fixed budget
of `data.domains.targets`; every run reads the same input windows. Loss: the full softmax over the
500-item catalogue (cosine scores / 0.05), in training and at evaluation, where the held-out loss of
tab k is the mean cross-entropy of the test targets (each user's last event) that fall in tab k
(`metrics.test.domain_loss`). Full softmax, because the mixture law models a proper held-out loss:
with sampled negatives the loss would depend on the sampler, not only on the model.

The study (scripts/reproduce_mixture_study.sh, experiments/mixture_study.py) sets the mixture, the
model width and the budget on the command line:

Command:   python -m experiments.run --config=configs/mixture_synthetic.py \\
             --config.data.domains.weights="(0.25,0.25,0.25,0.25)" --config.data.domains.targets=4000 \\
             --config.model.dim=16 --workdir=workdirs/mixture_synthetic
Quick:     python -m experiments.run --config=configs/mixture_synthetic.py:quick
Hardware:  2-core x86 CPU shared with other jobs (load ~25): 3-6 minutes a run at width 16, 7-10 at
           width 64, most of it start-up and compilation; test mean tab loss ~6.7-7.0 at width 16 /
           4,000 targets, ~5.9 at width 64 / 16,000 (results/mixture_study/).
"""
import ml_collections

from configs import base

WORLD = dict(seed=0, num_users=6000, num_items=500, num_topics=10, mean_seq_len=30.0, max_seq_len=120,
             tab_noise=(0.05, 0.3, 0.55, 0.8), tab_alpha=(1.0, 2.0, 3.0, 4.0))


def get_config(arg: str | None = None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"mixture_synthetic: unknown config argument {arg!r}; known: 'quick'")
  c = base.base()
  c.name = "mixture_synthetic"
  c.dataset_label = "synthetic"
  c.data.update(dict(kind="synthetic", world=WORLD, logs="standard", max_len=32, protocol="last_item"))
  c.data.domains.update(dict(field="tab", weights=(0.25, 0.25, 0.25, 0.25), targets=4000, seed=0))
  c.model = ml_collections.ConfigDict(dict(name="sasrec", dim=16, num_blocks=1, num_heads=1, max_len=32,
                                           dropout=0.1, backend="xla", attention_tiling="auto"))
  c.model.ffn_dim = c.model.get_ref("dim")
  c.loss.kind = "full_softmax"
  c.loss.temperature = 0.05
  c.train.batch_size = 256
  c.train.num_epochs = 8
  c.train.learning_rate = 5e-3
  c.train.eval_every_epochs = 0          # one evaluation, at the end: the held-out losses
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 10_000
  c.train.count_flops = False
  c.eval.exclude_history = False         # re-watches happen in this world: a repeat is a valid target
  if arg == "quick":
    base.apply_quick(c)
  return c
