"""The bundled default job: HSTU on a generated KuaiRand-format synthetic world (no download needed).

Data: recjax.data.synthetic.WorldConfig defaults (2,000 users, 1,000 videos in 20 topics, ≈ 120k
events with timestamps, 4 tabs with noise 0.05 … 0.8), generated deterministically from the seed
into <workdir>/data and read back through the KuaiRand reader, like a real release.
Model: HSTU, 2 blocks x 1 head x 64, relative position + time bias, max length 100; sampled softmax
(128 negatives, temperature 0.05), 20 epochs; full-catalogue ranking of each user's last event.

Command:   python -m experiments.run --config=configs/hstu_synthetic.py
Quick:     python -m experiments.run --config=configs/hstu_synthetic.py:quick
Hardware:  2-core x86 CPU; expected about 1-2 minutes end to end, HR@10 well above the
           popularity level (see results/synthetic/hstu_synthetic.json).
"""
from configs import base


def get_config(arg: str | None = None):
  c = base.base()
  c.name = "hstu_synthetic"
  c.dataset_label = "synthetic"
  c.data.update(dict(   # update, not replace: base's keys stay declared for command-line overrides
      kind="synthetic", world=dict(seed=0), logs="standard", max_len=100, protocol="last_item",
      array_record=True))   # file -> reader -> sequences -> array_record on disk -> grain, as in WORKSPACE.md
  c.model.dim = 64
  c.model.dqk = 64
  c.model.dv = 64
  c.model.max_len = 100
  c.model.attn_norm_len = 100
  c.train.num_epochs = 20
  c.train.eval_every_epochs = 5
  c.train.log_every_steps = 40
  c.eval.exclude_history = False   # users re-watch videos in this world: a repeat is a valid target
  if arg == "quick":
    base.apply_quick(c)
  return c
