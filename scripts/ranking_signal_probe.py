"""What signal does a synthetic ranking world plant, and where can a ranker read it? A diagnosis.

    python scripts/ranking_signal_probe.py [--config configs/hstu_rank_synthetic.py] [--workdir /tmp/probe]
                                           [--tasks is_click,long_view,is_like]

The synthetic generator (recjax/data/synthetic.py) draws every feedback from the user's current
affinity to the candidate's topic (log(K x interest), interests drifting along the history) and,
for is_click / long_view, the video's duration. Its side tables make two of those inputs visible:
`video_features_basic.tag` is the item's topic, `user_features.onehot_feat1` the user's dominant
topic at the start of the history. This script fits one logistic regression per task and feature
set on the ranking task's own training candidates (Newton's method, a tiny ridge) and reports the
test NE of each, beside the oracle's (the true probabilities). Feature sets, each adding to the
duration one-hot:

  duration  the candidate's duration bucket only
  static    + [candidate topic = the user's dominant start topic] (a user feature: DLRM reads it
            directly through its dot products)
  bag       + log share of the candidate's topic in the request's history (order-free)
  recent    bag + the same share over the newest 16 history events (does recency add anything?)
  watch     recent + the mean watch-ratio bucket of the history events of the candidate's topic
            (the outcome of earlier same-topic views: what target attention could read)
  all       every feature above

Nothing here trains a neural model; it says how much each kind of input can explain, so a
ranker's miss can be told apart from a world without the signal. The data are the config's
(`tasks.make_task`: same world, split and candidates as the training run).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recjax import tasks  # noqa: E402
from recjax.data import synthetic  # noqa: E402

FEATURE_SETS = ("duration", "static", "bag", "recent", "watch", "all")
RECENT = 16


def _raw_values(codes_to_values: list) -> np.ndarray:
  """Code -> raw int value (code 0, unknown, -> a value no topic has)."""
  return np.array([-10**9] + [int(v) for v in codes_to_values], np.int64)


def topic_decoders(num_topics: int) -> tuple[np.ndarray, np.ndarray]:
  """`ranking.encode_categorical` codes values in sorted order: the tag column is text ("10" sorts
  before "2"), onehot_feat1 a number. -> (tag code -> topic, onehot_feat1 code -> topic)."""
  return (_raw_values(sorted(str(t) for t in range(num_topics))), _raw_values(range(num_topics)))


def features(ex, ctx, feature_set: str, num_topics: int) -> tuple[np.ndarray, np.ndarray]:
  """(x [M, F] float, labels [M, T]) over the M real candidates of `ex`."""
  a = ex.arrays
  real = a["cand_mask"] > 0
  tag, dur = ctx.item_names.index("tag"), ctx.item_names.index("duration_bucket")
  tag_topic, user_topic = topic_decoders(num_topics)
  hist_topic = tag_topic[a["hist_feats"][..., tag]]                      # [N, H]
  cand_topic = tag_topic[a["cand_feats"][..., tag]]                      # [N, C]
  n = a["hist_lengths"][:, None].astype(np.float64)
  valid = np.arange(hist_topic.shape[1])[None] < n
  same = (hist_topic[:, None, :] == cand_topic[:, :, None]) & valid[:, None, :]   # [N, C, H]
  cols = [np.eye(ctx.item_vocab[dur])[a["cand_feats"][..., dur]]]
  every = feature_set == "all"
  if feature_set == "static" or every:
    dominant = user_topic[a["user_feats"][:, ctx.user_names.index("onehot_feat1")]]
    cols.append((dominant[:, None] == cand_topic)[..., None].astype(np.float64))
  if feature_set in ("bag", "recent", "watch") or every:
    cols.append(np.log((same.sum(-1) + 0.5) / (n + 0.5 * num_topics))[..., None])
  if feature_set in ("recent", "watch") or every:
    newest = valid & (np.arange(hist_topic.shape[1])[None] >= n - RECENT)
    cols.append(np.log(((same & newest[:, None]).sum(-1) + 0.5) / (np.minimum(n, RECENT) + 0.5 * num_topics))[..., None])
  if feature_set == "watch" or every:
    watch = a["hist_watch"].astype(np.float64)[:, None, :]
    cols.append(((same * watch).sum(-1) / np.maximum(same.sum(-1), 1))[..., None])
  x = np.concatenate([np.broadcast_to(c, real.shape + c.shape[-1:]) for c in cols], -1)
  return x[real], a["cand_labels"][real].astype(np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iters: int = 100):
  """Newton's method on the mean log loss (+ ridge) -> predict(x) -> probabilities."""
  xb = np.concatenate([x, np.ones((len(x), 1))], 1)
  w = np.zeros(xb.shape[1])
  for _ in range(iters):
    p = 1 / (1 + np.exp(-xb @ w))
    g = xb.T @ (p - y) / len(y) + ridge * w
    h = (xb * (p * (1 - p))[:, None]).T @ xb / len(y) + ridge * np.eye(len(w))
    w -= np.linalg.solve(h, g)
    if np.abs(g).max() < 1e-9:
      break
  return lambda z: 1 / (1 + np.exp(-np.concatenate([z, np.ones((len(z), 1))], 1) @ w))


def normalized_entropy(p: np.ndarray, y: np.ndarray) -> float:
  p = np.clip(p, 1e-7, 1 - 1e-7)
  base = y.mean()
  return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
               / -(base * np.log(base) + (1 - base) * np.log(1 - base)))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="configs/hstu_rank_synthetic.py")
  ap.add_argument("--workdir", default="/tmp/ranking_signal_probe", help="where the world is generated")
  ap.add_argument("--tasks", default="is_click,long_view,is_like")
  args = ap.parse_args()
  spec = importlib.util.spec_from_file_location("probe_config", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  if config.data.kind != "synthetic" or not config.ranking.context:
    raise SystemExit(f"{args.config}: needs a synthetic ranking config with ranking.context=True")
  task = tasks.make_task(config, args.workdir)
  num_topics = synthetic.WorldConfig(**dict(config.data.world)).num_topics
  names = list(task.task_names)
  train, test = task.examples["train"], task.examples["test"]
  oracle = task.oracle["test"][test.arrays["cand_mask"] > 0]
  print(f"{args.config}: {int((train.arrays['cand_mask'] > 0).sum())} train / "
        f"{int((test.arrays['cand_mask'] > 0).sum())} test candidates; test NE of a logistic fit per feature set")
  print(f"{'task':18s}" + "".join(f"{s:>9s}" for s in FEATURE_SETS) + f"{'oracle':>9s}")
  data = {s: (features(train, task.context, s, num_topics), features(test, task.context, s, num_topics))
          for s in FEATURE_SETS}
  for t in args.tasks.split(","):
    j = names.index(t)
    row = []
    for s in FEATURE_SETS:
      (xa, ya), (xb, yb) = data[s]
      row.append(normalized_entropy(fit_logistic(xa, ya[:, j])(xb), yb[:, j]))
    ne_oracle = normalized_entropy(oracle[:, j], data["duration"][1][1][:, j])
    print(f"{t:18s}" + "".join(f"{v:9.4f}" for v in row) + f"{ne_oracle:9.4f}")


if __name__ == "__main__":
  main()
