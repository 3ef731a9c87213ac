"""Item vectors for the tokenizers, by route (each result names its route):

  "content:tfidf"   TF-IDF of titles + category/genre multi-hots (numpy; no text model needed)
  "collab:ppmi"     item-item positive PMI over co-occurrence windows of `UserSequences`, reduced by
                    truncated SVD (scipy.sparse) -- the only route for catalogues without content
  "synthetic"       the synthetic world's topics and content features (author, duration)
  "collab:ppmi+content:tfidf"
                    collaborative vectors where the item has training events; the rest (cold and
                    never-rated items) mapped from their content into the collaborative space by a
                    ridge regression fitted on the items that have both (`fill_from_content`)

Readers stay untouched: these take arrays (titles, genre lists, sequences, a `World`) and return
`ItemVectors` whose rows are named by model item ids.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from recjax.data.types import UserSequences

_TOKEN = re.compile(r"[a-z0-9]+")


@dataclasses.dataclass(frozen=True)
class ItemVectors:
  route: str
  item_ids: np.ndarray     # int64 [N] model ids of the rows
  vectors: np.ndarray      # float32 [N, D]

  def __post_init__(self):
    if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.item_ids):
      raise ValueError(f"ItemVectors({self.route}): {len(self.item_ids)} ids but vectors {self.vectors.shape}")


def _l2_rows(m: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(m, axis=1, keepdims=True)
  return m / np.where(norm > 0, norm, 1.0)


def tfidf(texts: Sequence[str], min_df: int = 1) -> tuple[np.ndarray, list[str]]:
  """Row-normalised TF-IDF [N, V] over lowercase alphanumeric tokens; smoothed idf
  log((1 + N) / (1 + df)) + 1. Tokens in fewer than `min_df` texts are dropped."""
  docs = []
  for row, t in enumerate(texts):
    if not isinstance(t, str):
      raise ValueError(f"tfidf: row {row} is {type(t).__name__}, not a string")
    docs.append(_TOKEN.findall(t.lower()))
  df: dict[str, int] = {}
  for d in docs:
    for tok in set(d):
      df[tok] = df.get(tok, 0) + 1
  vocab = sorted(t for t, c in df.items() if c >= min_df)
  index = {t: i for i, t in enumerate(vocab)}
  m = np.zeros((len(docs), len(vocab)), np.float32)
  for row, d in enumerate(docs):
    for tok in d:
      if tok in index:
        m[row, index[tok]] += 1.0
  idf = np.log((1.0 + len(docs)) / (1.0 + np.array([df[t] for t in vocab], np.float64))) + 1.0
  return _l2_rows(m * idf.astype(np.float32)), vocab


def multi_hot(labels: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
  """One column per distinct label (genre, category) -> [N, C] in {0, 1}."""
  vocab = sorted({lab for labs in labels for lab in labs})
  index = {t: i for i, t in enumerate(vocab)}
  m = np.zeros((len(labels), len(vocab)), np.float32)
  for row, labs in enumerate(labels):
    for lab in labs:
      m[row, index[lab]] = 1.0
  return m, vocab


def _truncated_svd(m, dim: int, seed: int) -> np.ndarray:
  """Rows projected on the top-`dim` singular directions, scaled by sqrt(σ) -> [N, dim]."""
  dim = min(dim, min(m.shape) - 1)
  if dim < 1:
    raise ValueError(f"truncated SVD needs a matrix larger than 1 x 1, got {m.shape}")
  v0 = np.random.default_rng(seed).standard_normal(min(m.shape))
  u, s, _ = svds(sp.csr_matrix(m, dtype=np.float64) if not sp.issparse(m) else m.astype(np.float64),
                 k=dim, v0=v0)
  order = np.argsort(-s)
  u, s = u[:, order], s[order]
  u = u * np.where(np.sum(u, 0) < 0, -1.0, 1.0)     # fix each direction's sign (svds leaves it free)
  return (u * np.sqrt(s)).astype(np.float32)


def content_vectors(item_ids, titles: Sequence[str], categories: Sequence[Sequence[str]] | None = None,
                    category_weight: float = 1.0, min_df: int = 2, dim: int | None = None,
                    seed: int = 0) -> ItemVectors:
  """TF-IDF of titles beside weighted category multi-hots (each block row-normalised), optionally
  reduced to `dim` by truncated SVD. Route "content:tfidf"."""
  ids = np.asarray(item_ids, np.int64)
  if len(titles) != len(ids) or (categories is not None and len(categories) != len(ids)):
    raise ValueError(f"content_vectors: {len(ids)} item ids, {len(titles)} titles, "
                     f"{None if categories is None else len(categories)} category lists")
  blocks = [tfidf(titles, min_df)[0]]
  if categories is not None:
    blocks.append(category_weight * _l2_rows(multi_hot(categories)[0]))
  x = np.concatenate(blocks, axis=1)
  if dim is not None:
    x = _truncated_svd(x, dim, seed)
  return ItemVectors("content:tfidf", ids, x.astype(np.float32))


def cooccurrence_counts(seqs: UserSequences, window: int = 5) -> sp.csr_matrix:
  """Symmetric counts [V, V] (V = num_items) of item pairs at most `window` positions apart in
  one user's sequence (the same item twice counts on the diagonal)."""
  if window < 1:
    raise ValueError(f"cooccurrence_counts: window must be >= 1, got {window}")
  user_of = np.repeat(np.arange(seqs.num_users), seqs.lengths)
  rows, cols = [], []
  for d in range(1, window + 1):
    same = user_of[d:] == user_of[:-d]
    rows.append(seqs.items[:-d][same])
    cols.append(seqs.items[d:][same])
  r, c = np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
  v = seqs.num_items
  m = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(v, v)).tocsr()
  return (m + m.T).tocsr()


def ppmi(counts: sp.spmatrix) -> sp.csr_matrix:
  """Positive PMI: max(0, log(c_ij · total / (c_i · c_j))) on the non-zero entries."""
  m = sp.coo_matrix(counts, dtype=np.float64)
  row_sum = np.asarray(counts.sum(1)).ravel()
  total = row_sum.sum()
  pmi = np.log(m.data * total / (row_sum[m.row] * row_sum[m.col]))
  keep = pmi > 0
  return sp.csr_matrix((pmi[keep], (m.row[keep], m.col[keep])), shape=m.shape)


def cooccurrence_vectors(seqs: UserSequences, dim: int = 64, window: int = 5, seed: int = 0) -> ItemVectors:
  """Collaborative vectors for the catalogue (`seqs.catalogue()`): PPMI of co-occurrences,
  truncated SVD. Items never seen get zero vectors. Route "collab:ppmi"."""
  m = ppmi(cooccurrence_counts(seqs, window))
  ids = seqs.catalogue()
  x = _truncated_svd(m, dim, seed)
  # ARPACK leaves round-off (~1e-16) in the rows of items without co-occurrences; normalising such a
  # row would give the item an arbitrary direction (an arbitrary SID) instead of the zero vector's.
  x[np.diff(m.indptr) == 0] = 0.0
  return ItemVectors("collab:ppmi", ids, x[ids])


@dataclasses.dataclass(frozen=True)
class ContentFill:
  vectors: ItemVectors     # route "collab:ppmi+content:tfidf"
  filled: int              # rows that had no collaborative vector and now come from content
  holdout_cosine: float    # mean cosine, predicted vs real unit collab vector, on 10% of the fitted rows
                           # held out of a second fit (the mean-vector baseline's is reported beside it)
  holdout_cosine_mean_vector: float


def _ridge(a_ND: np.ndarray, y_NK: np.ndarray, ridge: float) -> np.ndarray:
  """argmin_W |A W - Y|^2 + ridge |W|^2 -> [D, K] (solved in the smaller of the two Gram forms)."""
  a, y = a_ND.astype(np.float64), y_NK.astype(np.float64)
  if a.shape[0] < a.shape[1]:   # dual: W = A^T (A A^T + ridge I)^-1 Y
    return a.T @ np.linalg.solve(a @ a.T + ridge * np.eye(a.shape[0]), y)
  return np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y)


def fill_from_content(collab: ItemVectors, content_x: np.ndarray, ridge: float = 3.0, seed: int = 0) -> ContentFill:
  """Give the items without a collaborative vector (zero rows: no training events, e.g. cold items)
  one predicted from their content, so they get SIDs near warm items that are alike in content
  instead of all sharing the zero vector's SID.

  The map is a ridge regression, content row -> unit collaborative row, fitted on every item that
  has both (the targets are unit vectors because the tokenizer sees directions: the raw rows' norms
  follow popularity, which content cannot predict). Predicted rows are scaled to the median norm of
  the real ones, so `normalize=False` keeps them on the same scale. `content_x` [N, C] holds the
  content of `collab.item_ids`, same order. A held-out check (10% of the fitted rows, a second fit
  without them) reports how well content predicts the collaborative direction.
  """
  x = np.asarray(collab.vectors, np.float64)
  z = np.asarray(content_x, np.float64)
  if z.ndim != 2 or z.shape[0] != x.shape[0]:
    raise ValueError(f"fill_from_content: content {z.shape} for {x.shape[0]} collaborative rows")
  if ridge <= 0:
    raise ValueError(f"fill_from_content: ridge must be > 0, got {ridge}")
  norm = np.linalg.norm(x, axis=1)
  known, missing = np.flatnonzero(norm > 0), np.flatnonzero(norm == 0)
  if len(known) < 2:
    raise ValueError(f"fill_from_content: {len(known)} items have a collaborative vector; need >= 2 to fit the map")
  unit = x[known] / norm[known, None]

  perm = np.random.default_rng(seed).permutation(len(known))
  held, fit = perm[:max(1, len(known) // 10)], perm[max(1, len(known) // 10):]
  pred = _l2_rows(z[known[held]] @ _ridge(z[known[fit]], unit[fit], ridge))
  baseline = _l2_rows(np.broadcast_to(unit[fit].mean(0), (len(held), x.shape[1])))
  held_cos = float(np.mean(np.sum(pred * unit[held], 1)))
  base_cos = float(np.mean(np.sum(baseline * unit[held], 1)))

  out = x.copy()
  if len(missing):
    out[missing] = _l2_rows(z[missing] @ _ridge(z[known], unit, ridge)) * np.median(norm[known])
  return ContentFill(ItemVectors("collab:ppmi+content:tfidf", collab.item_ids, out.astype(np.float32)),
                     int(len(missing)), held_cos, base_cos)


def synthetic_vectors(item_topic, item_author, item_duration_ms, include_topic: bool = True,
                      topic_weight: float = 2.0) -> ItemVectors:
  """The synthetic world's content: topic one-hot (optional), author one-hot and standardised log
  duration, for video ids 0..N-1 (model ids 1..N, KuaiRand's +1 shift). Pass a `World`'s
  `item_topic`, `item_author`, `item_duration_ms`. Route "synthetic".

  Topics are the coarse level of the world (each author writes in one topic). With equal weights
  a topic change and an author change are the same distance (√2), so level 1 has no reason to
  prefer topics; weight 2 makes a topic change the largest step, so level 1 ≈ topic and the next
  levels split authors.
  """
  topic, author = np.asarray(item_topic), np.asarray(item_author)
  dur = np.log(np.asarray(item_duration_ms, np.float64))
  if not len(topic) == len(author) == len(dur):
    raise ValueError(f"synthetic_vectors: {len(topic)} topics, {len(author)} authors, {len(dur)} durations")
  blocks = []
  if include_topic:
    blocks.append(topic_weight * (topic[:, None] == np.unique(topic)[None, :]))
  blocks.append(author[:, None] == np.unique(author)[None, :])
  blocks.append(((dur - dur.mean()) / max(dur.std(), 1e-12))[:, None])
  x = np.concatenate([b.astype(np.float32) for b in blocks], axis=1)
  return ItemVectors("synthetic", np.arange(1, len(topic) + 1, dtype=np.int64), x)
