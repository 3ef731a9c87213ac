"""Shared defaults: the HSTU reference's ML-1M training protocol (papers.md §3.2, §3.5).

Not a runnable config itself; each configs/<name>.py starts from `base()` and changes what differs.
"""
from __future__ import annotations

import ml_collections


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.dataset_label = "ml-1m"
  c.seed = 42
  c.quick = False
  c.task = "retrieval"                       # "retrieval" | "ranking" (recjax/tasks/)

  # Every key recjax.data.registry reads is declared here (the command line can only set declared
  # keys); each kind reads its own (registry.SOURCE_KEYS), the others are ignored.
  c.data = ml_collections.ConfigDict()
  c.data.kind = "movielens"                  # "movielens" | "text" | "kuairand" | "synthetic"
  c.data.name = "ml-1m"                      # movielens: "ml-100k" | "ml-1m" | "ml-20m"
  c.data.data_dir = "../shared/data/ml-1m"   # movielens, kuairand: relative to the repository root
  c.data.with_timestamps = False             # movielens: read the ratings file's timestamps
  c.data.path = ""                           # text: the one-line-per-user sequence file
  c.data.id_offset = 0                       # text: added to every item id of the file
  c.data.variant = "pure"                    # kuairand: "pure" | "1k" | "27k"
  c.data.logs = "standard"                   # kuairand, synthetic: "standard" | "random" | "all"
  c.data.world = ml_collections.ConfigDict()  # synthetic: recjax.data.synthetic.WorldConfig fields (unset = default)
  c.data.array_record = False                # route the sequences through an array_record cache in the workdir
  c.data.max_len = 200
  c.data.protocol = "last_item"              # the reference: train on all but the last, test on the last
  # Domain mixture of the training targets (recjax/data/domains.py): field "" = off.
  c.data.domains = ml_collections.ConfigDict(dict(field="", weights=(), natural=False, targets=0, seed=0))

  c.model = ml_collections.ConfigDict()
  c.model.name = "hstu"
  c.model.dim = 50
  c.model.num_blocks = 2
  c.model.num_heads = 1
  c.model.dqk = 50
  c.model.dv = 50
  c.model.max_len = c.data.get_ref("max_len")
  # The reference's N: max_len + gr_output_length (10) + 1 = 211; follows --config.data.max_len
  # unless a config sets it (setting it replaces the formula with that number).
  c.model.attn_norm_len = c.data.get_ref("max_len") + 11
  c.model.dropout = 0.2
  c.model.use_position_bias = True
  c.model.use_time_bias = "auto"             # "auto" (on iff the dataset has timestamps) | "on" | "off"
  c.model.num_time_buckets = 129
  c.model.backend = "xla"
  c.model.attention_tiling = "auto"          # XLA path: skip hidden tiles (same result); "auto": CPU only | "on" | "off"
  c.model.token_packing = True               # token-wise ops on the real tokens only (same result)
  c.model.attention_impl = "auto"            # causal SiLU attention: "auto" (C++ kernel on CPU) | "xla" | "native"

  c.loss = ml_collections.ConfigDict()
  c.loss.kind = "sampled_softmax"            # or "full_softmax"
  c.loss.num_negatives = 128
  c.loss.temperature = 0.05
  c.loss.impl = "auto"                       # sampled softmax: "auto" (C++ kernel on CPU) | "xla" | "native"
  c.loss.chunk = 128                         # tokens per scan step of the sampled-softmax kernel (L2-sized)
  c.loss.item_chunk = 65536                  # items per step of the full softmax
  c.loss.token_bucket = 2048                 # packed supervised positions are padded to a multiple

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.num_epochs = 101
  c.train.max_steps = -1
  c.train.learning_rate = 1e-3
  c.train.b1 = 0.9
  c.train.b2 = 0.98
  c.train.eps = 1e-8
  c.train.weight_decay = 0.0
  c.train.eval_every_epochs = 1              # the reference evaluates after every epoch
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 500
  c.train.prng_impl = "unsafe_rbg"           # threefry makes dropout masks 10x slower on CPU
  c.train.count_flops = True                 # FLOPs per batch shape (one extra compile each) and MFU

  # The ranking task's protocol and loss (read only when task == "ranking"; recjax/tasks/ranking.py).
  c.ranking = ml_collections.ConfigDict()
  c.ranking.mode = "last_k"                  # recjax.data.ranking.RankingSplit fields
  c.ranking.history_len = 64
  c.ranking.request_size = 1
  c.ranking.test_k = 4
  c.ranking.valid_k = 4
  c.ranking.valid_quantile = 0.8
  c.ranking.test_quantile = 0.9
  c.ranking.min_history = 1
  c.ranking.train_k = 0                      # > 0: only each user's newest train_k training events are candidates
  c.ranking.tasks = "kuairand"               # "kuairand" (8 feedbacks) | "rating" (MovieLens >= 4, = 5)
  c.ranking.task_weights = ()                # one weight per task; () = all 1
  c.ranking.watch_weight = 0.0               # > 0: the watch-ratio regression head's MSE weight
  c.ranking.context = True                   # user / item feature tables of the dataset as inputs
  c.ranking.history_layout = "padded"        # "ragged": history windows cut per batch (recjax/data/ranking.py)
  c.ranking.bucket_min = 16                  # ragged: history widths bucket_min * 2^k, capped at history_len
  c.ranking.sl_alpha = 0.0                   # stochastic length (HSTU), alpha in (1, 2]; 0 = off; ragged only
  c.ranking.sl_select = "random"             # SL keeps "random" events (in order) or the "newest"

  # Device mesh (recjax/train/mesh.py): shape over the axes ("data", "model"); -1 = all devices.
  c.mesh = ml_collections.ConfigDict({"shape": (1, 1), "axes": ("data", "model"), "dense": "replicate"})

  c.eval = ml_collections.ConfigDict()
  c.eval.ks = (1, 10, 50, 200)
  c.eval.exclude_history = True              # the reference removes items of the input window
  c.eval.batch_size = 512
  c.eval.item_chunk = 4096                   # catalogue items scored per scan step; memory O(batch * item_chunk)
  return c


def apply_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The quick-test switch: a few steps, to check that a config runs end to end."""
  c.quick = True
  c.train.num_epochs = 1
  c.train.max_steps = 10
  c.train.log_every_steps = 5
  c.train.eval_every_epochs = 0
  return c
