"""Issue 18's long-sequence quality study: one arm per run, on the long-history world (papers.md §2, §4.2).

Argument: `<arm>[,cpu][,quick][,w<D>][,e<N>]` (comma-separated; order of the extras free), e.g. `ultra,cpu`.
  arm     one of ARMS (below).
  cpu     the CPU-sized world `long_world.CPU_WORLD` (384 users, histories 512-4,096, mean ~1.2k)
          instead of `long_world.WORLD` (256 users, 1k-16k, mean ~3.9k; meant for an accelerator),
          and only each user's newest CPU_TRAIN_K = 256 training events as training candidates
          (`ranking.train_k`; the older ones stay history): <= 384 steps per epoch instead of 1,512.
          The candidates kept are the ones nearest the dormant topic's return (the last 10% of a
          history), so the long-range signal is still in training for the longer histories.
  cpu_multi  the same, on `long_world.CPU_MULTI_WORLD`: five dormant topics per user instead of one,
          returning from 60% of a history, and less tab noise, so that training holds 6,242 planted
          return-phase candidates instead of 452 while the full-vs-newest-256 Bayes gap on the test
          ones stays open (0.035 NE; CPU_WORLD 0.044; long_world.py).
  w<D>    the arm at width D (dqk = dv = D / 2; default 64, e.g. `ultra,cpu,w32`), named ..._w<D>: the
          points of the scaling-efficiency fit (experiments/long_sequences.py), every other setting equal.
  e<N>    the arm trained for N epochs instead of DEFAULT_EPOCHS = 4, named ..._e<N>: a longer budget
          (4 epochs leave every arm far from the oracle; see Result), gathered into its own table
          (experiments/long_sequences.py --epochs=N).
  quick   `long_world.QUICK_WORLD`, history 512, a few steps (configs/long_sequences_hstu_rank.py
          `apply_quick`): a smoke test of the arm, no result.
Runs are named long_sequences[_cpu]_<arm> (experiments/run.py adds _quick) and write
results/long_sequences/<name>.json; `config.study` records the arm and the preset, which is what
experiments/long_sequences.py groups by.

Shared by every arm (configs/long_sequences_hstu_rank.py, reused as is): data, protocol, loss,
training and evaluation. The world is generated from its seed and read through the KuaiRand
reader; per user the last 64 events are test, the 64 before validation, requests of 16 candidates
sharing the <= H = 4,096 events before them (H covers every history of the `cpu` world, the newest
4,096 of WORLD's); histories cut per batch (`history_layout="ragged"`, widths 256 ... 4,096);
multi-task BCE on the 8 feedbacks; batch 16, 4 epochs, AdamW 1e-3, weight decay 0.1, dropout 0.3;
the epoch with the lowest validation NE selects (early stopping). The task also reports the
metrics on the planted return-phase candidates alone (`planted.`): where the signal beyond the
newest 256 events lives (long_world.py: on the `cpu` world's test-split return-phase events the
Bayes predictor's NE is 0.8480 with the full history vs 0.8920 with the newest 256).

Widths are the same in every arm (D = 64, 2 blocks, 2 heads, dqk = dv = 32), so training FLOPs
differ only by what each arm attends to. The arms:
  hstu_full        HSTU ranker (recjax/models/hstu_ranker.py), the whole history up to H, full causal
                   attention with the time bias, user features as prefix tokens (the study's reference).
  hstu_newest256   the same model, histories cut to the newest 256 events (= long_sequences_hstu_rank.py
                   `newest256`): the baseline the planted signal is measured against.
  hstu_sl          hstu_full trained under HSTU's stochastic length (data/stochastic_length.py), alpha =
                   SL_ALPHA = 1.6: training histories longer than H^0.8 (776 at H = 4,096) are cut to
                   776 random events (in order) with probability 1 - H^1.6 / n^2, a fresh draw each
                   epoch; evaluation reads whole histories. Expected attention cost O(H^1.6).
  ultra            ULTRA-HSTU (recjax/models/ultra_hstu.py; summed item + action tokens, recency and
                   time-gap embeddings, no relative bias): SLA K1 = 256 local keys, K2 = 32 global
                   history columns, blocks of 128 query rows; attention truncation: block 1 of 2 on the
                   whole sequence, block 2 on the newest L' = 512 history tokens; one stream. The paper's
                   shape at our length: K1 + K2 = 288 keys per query of up to 4,096, L' = H / 8.
  ultra_k1_0       ultra with K1 = 0 (the diagonal only: global columns + context), the paper's
                   "global only" ablation.
  ultra_k2_0       ultra with K2 = 0 (context + local band), "local only".
  ultra_no_trunc   ultra without attention truncation (both blocks on the whole sequence).
  ultra_interleaved  ultra with the paper's baseline layout instead of summed tokens: two tokens per event
                   (item, then action; `token_layout="interleaved"`), so 2n history tokens; K1, K2, L' and
                   the attention normaliser doubled (512, 64, 1,024, 2H + 16) so that every window spans
                   the same events as ultra's. The summed-vs-interleaved ablation: 2.8x ultra's inference
                   FLOPs per example on the cpu worlds (1.18e9 vs 4.20e8, XLA count of the test batches), 2.79x
                   its training FLOPs.
  ultra_mot        ultra with a mixture of two transducers: every event with all 8 feedback bits, and
                   the engagement events (like / follow / comment / forward / hate / profile, bits 190)
                   with those bits, fused by concat + Dense (as configs/ultra_hstu_rank_synthetic.py).
                   Two block stacks, each at the full history width: 2x ultra's FLOPs. Not the paper's
                   budget-matched mixture (its streams split one token budget): that is ultra_mot_budget.
  ultra_mot_budget ultra_mot in ultra's token budget (`model.stream_len`): the newest 3H / 4 events of
                   the all-event stream and the newest H / 4 engagement events (3,072 + 1,024 at H = 4,096),
                   as the paper's 2k consumption + 1k engagement against 3k mixed. Added after ultra_mot
                   (2x the FLOPs) lost to ultra at one seed. On the cpu worlds its caps hardly bind (3% of
                   users have more than 3,072 events, none 1,024 engagement events): see the next pair.
  ultra_newest1k   ultra's one stream on its newest H / 4 = 1,024 tokens (`stream_len = (H / 4,)`): a cap that
                   binds on the longer histories (47% of cpu_multi's users have more than 1,024 events in all;
                   a request's history holds only the events before it, so fewer requests are cut).
  ultra_mot_newest1k  the mixture in ultra_newest1k's budget: the newest 3H / 16 = 768 events and the newest
                   H / 16 = 256 engagement events. Against ultra_newest1k (not ultra), this pair is the paper's
                   mixture ablation with a budget that binds; each stream still runs both blocks, so the
                   FLOPs are not matched.
  gact_f2/4/8      ULTRA-HSTU with plain causal attention (sla=False), no truncation, one stream, and
                   GACT temporal folding f (`history_fold`: f events -> one token, layers/gact.py) over
                   the whole history: H / f history tokens.
  gact_newest_f4   gact_f4 with its folds aligned to the newest event (`model.fold_align="newest"`,
                   gact.fold_time): the partly filled fold is the oldest, so the newest event always sits
                   in the last slot of the last fold. gact_f4 folds from the oldest event, which puts the
                   newest in slot (n - 1) mod 4 of the last fold, a different slot per history length n.
                   Added after gact_f4 lost to trunc_f4 on both worlds: does the slot drift explain it?
  trunc_f2/4/8     the same model without folding, histories cut to the newest H / f events: GACT f's
                   token budget spent on recent events instead of on the whole history folded.
Choices where the study is silent: every ULTRA-HSTU arm divides attention by N = its largest token
count (history tokens + 16 candidates: H + 16 for ultra*, H / f + 16 for gact_f / trunc_f), as the
HSTU ranker does (H + 16); K2 counts history columns after the context (the context tokens are
always global); at `quick` (history 512) SLA and truncation shrink by 4 (K1 64, K2 8, blocks of 32,
L' 128) so that they still cut something.

Commands:  python -m experiments.run --config=configs/long_sequences.py:<arm>[,cpu] [--config.seed=S]
           scripts/reproduce_long_sequences.sh (every arm at SEEDS, resumable, then the gatherer
           experiments/long_sequences.py: table, plots and issue 18's three verdicts).
Quick:     python -m experiments.run --config=configs/long_sequences.py:ultra,quick
FLOPs:     the results files' training FLOPs per example are XLA's counts of the compiled step
           (recjax/scaling/flops.py), averaged over the run's batches of every width. Both rankers
           run attention without tiling, so hstu_full computes (and is counted at) dense attention.
Runtime:   measured, `cpu` preset, seed 1, wall-clock per run (training + per-epoch evaluation) on the
           2-core AVX-512 CPU box, from the results files' `wall_clock_s`. 4 epochs (from 9c35cad, two
           runs sharing the box): hstu_full 30 min, ultra 22 min, trunc_f4 25 min, gact_f4 14 min,
           hstu_newest256 3 min. 8 epochs (`e8`, from 008d092, three to four runs sharing the box):
           hstu_full 91 min, ultra 69 min, trunc_f4 61 min, gact_f4 31 min, hstu_newest256 7 min.
           Seed 2 at 8 epochs (from 3def614), nearly alone on the box: hstu_newest256 4 min, gact_f4 12 min
           (its file's 18 min include a 6-minute pause), ultra 27 min, trunc_f4 22 min. Not timed: hstu_sl, the ultra
           ablations, gact_f2/f8, trunc_f2/f8.
           `cpu_multi` at 8 epochs (from ac9d01a, one run at a time): hstu_newest256 4-6 min, hstu_full 34 min
           (41 with the test suite beside it); (from c6ceb04, one run at a time) gact_f4 8 min, trunc_f4
           19-22 min, ultra 33 min (seed 1, with gact_newest_f4 beside it: 13 min each), gact_f8 5 min,
           trunc_f8 8 min. Widths (from 2b999c6, one run at a time): ultra w16 15 min, w32 20 min;
           hstu_full w32 23 min, w16 27 min (beside the test suite); ultra_k1_0 15 min (seed 2: 20, beside
           the test suite; seed 3: 14), ultra_k2_0 25 min (beside the test suite), ultra_no_trunc 34 min,
           ultra_mot 49 min, ultra seed 3 22 min (one run at a time); ultra_k2_0 seed 2 28 min (beside the test suite);
           (from cfa958d) ultra_mot_budget 41 min (resumed once), ultra_interleaved 90 min (its first 20 beside newcomer-check),
           ultra_k2_0 seed 3 21 min (one run at a time); (from f7d0138) ultra_newest1k 17 min, ultra_mot_newest1k
           29 min, ultra_no_trunc seed 2 63 min (15 of them paused for benches, 19 beside newcomer-check),
           seed 3 36 min (alone); (from 06e3de9) ultra_newest1k seed 2 18 min (alone).
           The `world` preset (histories to 16k) is meant for an accelerator.
Result:    `cpu` preset, seed 1 (results/long_sequences/summary/cpu.md and cpu_e8.md). Test NE (mean of
           the 8 feedbacks; oracle 0.8625) at 4 / 8 epochs: ultra .9508 / .9168, trunc_f4 .9491 / .9208,
           hstu_newest256 .9593 / .9251, hstu_full .9665 / .9370, gact_f4 .9615 / .9472. 4 epochs leave
           every arm unconverged (validation NE still falling). No arm learns the planted long-range
           signal: NE on the planted return-phase candidates is >= 1.0 for every arm at both budgets
           (Bayes with the full history 0.8468, with no history 0.9605), so issue 18's verdicts 1
           (full history beats newest 256 there) and 3 (GACT f = 4 beats truncation) are misses;
           verdict 2 (ULTRA within 0.5% NE of full HSTU at <= 50% of its training FLOPs) holds at
           0.21x the FLOPs, because full-history HSTU trains worst. Seed 2 at 8 epochs (hstu_newest256 .9231,
           ultra .9134, gact_f4 .9527, trunc_f4 .9106; planted NE 0.99-1.03) moves test NE by .002-.010;
           truncation beats GACT at both seeds. Why the planted signal is not learned: the README's section
           (the training split holds 452 planted return-phase examples; scripts/long_world_split_signal.py).
           `cpu_multi` preset, 8 epochs, seeds 1-3 (summary/cpu_multi_e8.md; 6,242 planted training
           examples): planted NE hstu_full .9754 ± .0115 vs hstu_newest256 .9931 ± .0060. Full history is
           ahead at every seed (by .016 / .003 / .034), but the paired 95% interval [-.057, +.021] holds 0,
           so verdict 1 is still false (within noise). Test NE .9467 ± .0054 vs .9458 ± .0038.
           Verdict 2 holds there (ultra .9415 ± .0019 at seeds 1-3, 0.21x hstu_full's training FLOPs); verdict 3 misses
           (trunc_f4 .9413 ± .0032 vs gact_f4 .9537 ± .0041, seeds 1-2; at f = 8, seed 1: .9487 vs .9545);
           gact_newest_f4 (folds aligned to the newest event) .9552 ± .0052: no better than gact_f4.
           Widths 16 / 32 / 64 (seed 1 at 16 and 32): ultra .9604 / .9536 / .9415, hstu_full .9586 /
           .9538 / .9467; ultra's scaling efficiency over hstu_full (summary/cpu_multi_e8.md): slope ratio
           1.52 [0.93, 3.08] (training FLOPs), iso-NE compute ratio 8.1x [4.6, 31] training and 9.3x
           [5.5, 33] inference at ultra's largest run (with ultra's seeds 1-2 only: 1.59, 8.8x, 10.0x).
           Ablations against ultra (.9415 ± .0019, seeds 1-3): K1 = 0 .9455 ± .0035 (seeds 1-3; worse at
           each, paired +.0039 [-.0005, +.0084]) at 0.58x ultra's training FLOPs; K2 = 0 .9418 ± .0017 at
           0.95x (seeds 1-3; paired +.0003 [-.0020, +.0025]); truncation off .9417 ± .0011 at 1.39x (seeds 1-3;
           paired +.0002 [-.0069, +.0073]: truncation saves 28% of the training FLOPs at no measurable cost);
           ultra_mot .9472 at 2.00x (seed 1); ultra_mot_budget .9460 at 1.71x (seed 1): on this world its
           caps hardly bind (3% of users have more than 3,072 events; none has 1,024 engagement events).
           ultra_interleaved .9602 at 2.79x (seed 1): summed tokens are better here and 2.8x cheaper.
           The binding pair: ultra_newest1k .9437 ± .0038 (seeds 1-2) at 0.75x ultra's training FLOPs;
           ultra_mot_newest1k .9491 (seed 1), .0081 worse than ultra_newest1k at seed 1 (the engagement heads
           worse, click and long view better).
"""
import ml_collections

from configs import long_sequences_hstu_rank, long_world
from configs.ultra_hstu_rank_synthetic import ENGAGEMENT_BITS

ARMS = ("hstu_full", "hstu_newest256", "hstu_sl", "ultra", "ultra_k1_0", "ultra_k2_0", "ultra_no_trunc", "ultra_mot",
        "ultra_mot_budget", "ultra_interleaved", "ultra_newest1k", "ultra_mot_newest1k",
        "gact_f2", "gact_f4", "gact_f8", "gact_newest_f4", "trunc_f2", "trunc_f4", "trunc_f8")
EXTRAS = ("cpu", "cpu_multi", "quick")
# World presets (configs/long_world.py) by their extra; without one, `world` (long_world.WORLD).
PRESETS = {"cpu": long_world.CPU_WORLD, "cpu_multi": long_world.CPU_MULTI_WORLD, "world": long_world.WORLD}
# (K1, K2, SLA block, L') of the ultra arms at the full history and at `quick`.
SLA_FULL, SLA_QUICK = (256, 32, 128, 512), (64, 8, 32, 128)
CPU_TRAIN_K = 256   # cpu preset: training candidates per user (ranking.train_k)
DEFAULT_WIDTH = 64  # D of every arm; `w<D>` runs the arm at another width (the scaling fits' points)
DEFAULT_EPOCHS = 4  # training epochs of every arm; `e<N>` trains N (a longer budget, its own table)
SL_ALPHA = 1.6      # hstu_sl: stochastic length's alpha; histories cut to H^0.8, expected cost O(H^1.6)


def parse(arg: str | None) -> tuple[str, set[str], int, int]:
  """`<arm>[,cpu][,quick][,w<D>][,e<N>]` -> (arm, extras, width D, epochs N); unknown parts raise naming
  the known ones."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  if not parts or parts[0] not in ARMS:
    raise ValueError(f"long_sequences: the argument must start with an arm, one of {ARMS}; got {arg!r}")
  widths = [p for p in parts[1:] if p.startswith("w")]
  epochs = [p for p in parts[1:] if p.startswith("e")]
  extras = set(parts[1:]) - set(widths) - set(epochs)
  if (extras - set(EXTRAS) or len(extras) + len(widths) + len(epochs) != len(parts) - 1 or len(widths) > 1
      or len(epochs) > 1 or any(not w[1:].isdigit() or int(w[1:]) < 2 or int(w[1:]) % 2 for w in widths)
      or any(not e[1:].isdigit() or int(e[1:]) < 1 for e in epochs) or len(extras & set(PRESETS)) > 1):
    raise ValueError(f"long_sequences: after the arm only {EXTRAS} (one world preset at most), one even width "
                     f"w<D> and one epoch count e<N> (each once); got {arg!r}")
  return (parts[0], extras, int(widths[0][1:]) if widths else DEFAULT_WIDTH,
          int(epochs[0][1:]) if epochs else DEFAULT_EPOCHS)


def _ultra_model(c: ml_collections.ConfigDict, quick: bool) -> ml_collections.ConfigDict:
  """The ULTRA-HSTU arms' shared model (the `ultra` arm), widths as the HSTU ranker's."""
  k1, k2, block, trunc = SLA_QUICK if quick else SLA_FULL
  h = c.ranking.history_len
  return ml_collections.ConfigDict(dict(
      name="ultra_hstu", dim=64, num_blocks=2, num_heads=2, dqk=32, dv=32, max_history=h,
      attn_norm_len=h + c.ranking.request_size, dropout=0.3, num_time_buckets=129,
      sla=True, local_window=k1, global_window=k2, sla_block=block, full_layers=1, truncated_len=trunc,
      history_fold=1, token_layout="summed", stream_select=(0,), stream_encode=(255,), fusion="sum",
      remat=False, remat_policy="nothing", backend="xla"))


def get_config(arg: str | None = None):
  arm, extras, width, epochs = parse(arg)
  c = long_sequences_hstu_rank.get_config(None)
  assert c.train.num_epochs == DEFAULT_EPOCHS, "DEFAULT_EPOCHS must be the shared config's"
  preset = next((p for p in PRESETS if p in extras), "world")
  if preset != "world":   # the CPU-sized worlds
    c.data.world = dict(PRESETS[preset])
    c.ranking.train_k = CPU_TRAIN_K
  if "quick" in extras:
    long_sequences_hstu_rank.apply_quick(c)   # QUICK_WORLD whatever the preset: a smoke test
  c.name = "long_sequences" + ("" if preset == "world" else f"_{preset}") + f"_{arm}"
  c.dataset_label = "long_sequences"
  c.study = ml_collections.ConfigDict(dict(name="long_sequences", arm=arm, preset=preset, width=width,
                                           epochs=epochs))
  h = c.ranking.history_len
  if arm == "hstu_full":
    pass
  elif arm == "hstu_newest256":
    long_sequences_hstu_rank.cut_history(c, 256)
  elif arm == "hstu_sl":
    c.ranking.sl_alpha = SL_ALPHA
  else:
    c.model = _ultra_model(c, "quick" in extras)
    m = c.model
    if arm == "ultra_k1_0":
      m.local_window = 0
    elif arm == "ultra_k2_0":
      m.global_window = 0
    elif arm == "ultra_no_trunc":
      m.truncated_len = 0
    elif arm == "ultra_interleaved":   # two tokens per event: every token count doubles, same events
      m.token_layout = "interleaved"
      m.local_window, m.global_window, m.truncated_len = 2 * m.local_window, 2 * m.global_window, 2 * m.truncated_len
      m.attn_norm_len = 2 * h + c.ranking.request_size
    elif arm in ("ultra_mot", "ultra_mot_budget", "ultra_mot_newest1k"):
      m.stream_select = (0, ENGAGEMENT_BITS)
      m.stream_encode = (255, ENGAGEMENT_BITS)
      m.fusion = "concat_mlp"
      if arm == "ultra_mot_budget":   # ultra's H history tokens split 3:1 between the two streams
        m.stream_len = (3 * h // 4, h // 4)
      elif arm == "ultra_mot_newest1k":   # ultra_newest1k's H / 4 tokens split 3:1 between the two streams
        m.stream_len = (3 * h // 16, h // 16)
    elif arm == "ultra_newest1k":   # ultra's one stream on its newest H / 4 tokens: a budget that binds
      m.stream_len = (h // 4,)
    elif arm.startswith(("gact_f", "gact_newest_f", "trunc_f")):
      f = int(arm.rsplit("_f", 1)[1])
      m.sla = False
      m.local_window = m.global_window = m.sla_block = 0   # unused without SLA: keep the dump honest
      m.truncated_len = 0
      if arm.startswith("gact"):
        m.history_fold = f
        m.fold_align = "newest" if arm.startswith("gact_newest_f") else "oldest"
        m.attn_norm_len = h // f + c.ranking.request_size
      else:
        long_sequences_hstu_rank.cut_history(c, h // f)
  if width != DEFAULT_WIDTH:   # every arm scales the same way: D, and dqk = dv = D / 2
    c.name += f"_w{width}"
    c.model.dim, c.model.dqk, c.model.dv = width, width // 2, width // 2
  if epochs != DEFAULT_EPOCHS:   # after quick, which shortens training by steps, not epochs
    c.name += f"_e{epochs}"
    c.train.num_epochs = epochs
  return c
