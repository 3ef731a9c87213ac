"""Amazon Sports and Outdoors (P5 / TIGER split) under TIGER's protocol, shared by the Sports configs.

Data: ../shared/data/amazon-sports/sequential_data.txt (read its PROVENANCE.md: research use only,
never committed): 35,598 users, 18,357 items, 296,337 interactions, one line per user, oldest first.
Protocol (TIGER, Rajput et al. 2023, Table 1): per user, train on all but the last two items, the
second to last for validation and model selection, the last for test; rank the whole catalogue
(18,357 items) with the user's history items left among the candidates; Recall@5/10 (= HR@K, one
target), NDCG@5/10. The test row is the validation-selected epoch's (`eval.test_at_each_eval`).

Published rows (papers.md §6e): TIGER R@5 .0264 R@10 .0400 N@5 .0181 N@10 .0225; SASRec as quoted
by TIGER R@5 .0233 R@10 .0350 N@5 .0154 N@10 .0192; an open reproduction's HSTU R@10 .0365 /
N@10 .0207 (github.com/phonism/genrec).

Config argument (after the colon, comma-separated): "quick" (a few steps), "history_removed" (our
default protocol instead: the history window's items are not ranked; a separate row, name suffix).
"""
from __future__ import annotations

SPORTS_PATH = "../shared/data/amazon-sports/sequential_data.txt"
SPORTS_KS = (5, 10, 50, 200)   # 50 and 200: the retrieval task's headline cut-offs


def args_of(arg: str | None) -> set[str]:
  known = {"quick", "history_removed"}
  got = set(filter(None, (arg or "").split(",")))
  if got - known:
    raise ValueError(f"unknown config argument(s) {sorted(got - known)}; known: {sorted(known)}")
  return got


def apply_sports(c, max_len: int, history_removed: bool = False):
  """Data, split and evaluation of TIGER's protocol on `c` (a configs.base.base() config)."""
  c.dataset_label = "amazon-sports"
  c.data.kind = "text"
  c.data.path = SPORTS_PATH
  c.data.id_offset = 0                 # ids 1..18357 in the file are the model ids
  c.data.max_len = max_len
  c.data.protocol = "last_two"
  c.eval.ks = SPORTS_KS
  c.eval.exclude_history = False
  c.eval.test_at_each_eval = True
  if history_removed:
    remove_history(c)
  return c


def remove_history(c):
  """Our default protocol instead of TIGER's: the history window's items are not ranked (name suffix)."""
  c.eval.exclude_history = True
  c.name += "_history_removed"
  return c
