"""The catalogue's SIDs for one run: item-vector route -> tokenizer -> collision handling, cached.

    settings = SIDSettings(**config.sid)
    sids = load_or_build(cache_dir, fingerprint, lambda: build_catalogue_sids(train_seqs, settings))
    sids.codes_NL     # int64 [N, L'] the SID of each catalogue item (L' = L + 1 with a dedup level)
    sids.item_ids     # int64 [N] their model ids

Routes (`SIDSettings.vectors`): "collab:ppmi" (`item_vectors.cooccurrence_vectors` of the sequences
given, which must be the training part only: SIDs fitted on held-out items would leak the targets).
Tokenizers: "rq_kmeans" (default) or "rq_vae". Collisions (`dedup`): "append_level" (TIGER: one more
level holding each item's index inside its collision group), "reassign" (min-cost last-level
reassignment, `collisions.reassign_last_level`; zero collisions, same length), or "none" (keep
them; the generative task then reports collision-aware metrics beside the naive ones).

The cache file `<cache_dir>/sids_<fingerprint>.npz` stores the codes with the fingerprint that
made them; the caller's fingerprint hashes everything the SIDs depend on (data, split, settings),
so another setting gets another file, and a file whose stored fingerprint differs is rebuilt.
"""
from __future__ import annotations

import dataclasses
import json
import os

from absl import logging
import numpy as np

from recjax.data.types import UserSequences
from recjax.semantic_ids import codes as codes_lib
from recjax.semantic_ids import collisions, item_vectors, rq_kmeans

ROUTES = ("collab:ppmi",)
TOKENIZERS = ("rq_kmeans", "rq_vae")
DEDUP = ("append_level", "reassign", "none")
# Bump when the construction changes: old cache files then no longer match any fingerprint.
VERSION = 1


@dataclasses.dataclass(frozen=True)
class SIDSettings:
  vectors: str = "collab:ppmi"     # item-vector route (ROUTES)
  vector_dim: int = 64             # SVD width of the collaborative vectors
  window: int = 5                  # co-occurrence window (positions apart in one user's sequence)
  normalize: bool = True           # L2-normalise the vectors: on Amazon Sports the raw SVD rows of rare
                                   # items crowd near 0 (18% of items collide, one SID holds 343; 5.6% and
                                   # 73, the items without training events, after normalising)
  tokenizer: str = "rq_kmeans"     # TOKENIZERS
  num_levels: int = 3              # L (before a dedup level)
  codebook_size: int = 256         # K codes per level (the dedup level shares it)
  dedup: str = "append_level"      # DEDUP
  rq_vae_steps: int = 3000         # rq_vae only
  seed: int = 0

  def __post_init__(self):
    for name, value, known in (("vectors", self.vectors, ROUTES), ("tokenizer", self.tokenizer, TOKENIZERS),
                               ("dedup", self.dedup, DEDUP)):
      if value not in known:
        raise ValueError(f"sid.{name} must be one of {known}, got {value!r}")
    if min(self.vector_dim, self.window, self.num_levels, self.codebook_size) < 1:
      raise ValueError(f"sid: vector_dim, window, num_levels, codebook_size must be >= 1, got {self}")
    if self.dedup == "reassign" and self.tokenizer != "rq_kmeans":
      raise ValueError("sid.dedup='reassign' needs the quantisation costs of sid.tokenizer='rq_kmeans'")


@dataclasses.dataclass(frozen=True)
class CatalogueSIDs:
  item_ids: np.ndarray     # int64 [N] model ids
  codes_NL: np.ndarray     # int64 [N, L'] final SIDs (after collision handling)
  codebook_size: int       # K
  report: dict             # JSON-able: route, tokenizer, collisions before/after, usage per level

  @property
  def num_levels(self) -> int:
    return int(self.codes_NL.shape[1])

  def table(self, num_items: int) -> np.ndarray:
    """int32 [num_items, L'] codes by model id (rows of non-catalogue ids, e.g. padding 0, are 0)."""
    out = np.zeros((num_items, self.num_levels), np.int32)
    out[self.item_ids] = self.codes_NL
    return out


def _tokenize(x, s: SIDSettings):
  """-> (codes [N, L], last-level costs [N, K] or None)."""
  if s.tokenizer == "rq_kmeans":
    tok = rq_kmeans.fit_rq_kmeans(x, rq_kmeans.RQKMeansConfig(s.num_levels, s.codebook_size, seed=s.seed))
    costs = rq_kmeans.last_level_costs(tok.residuals(x), tok.codebooks_LKD) if s.dedup == "reassign" else None
    return tok.encode(x).astype(np.int64), costs
  from recjax.semantic_ids import rq_vae  # pylint: disable=import-outside-toplevel
  tok = rq_vae.fit_rq_vae(x, rq_vae.RQVAEConfig(num_levels=s.num_levels, codebook_size=s.codebook_size,
                                                num_steps=s.rq_vae_steps, seed=s.seed))
  return tok.encode(x).astype(np.int64), None


def build_catalogue_sids(train_seqs: UserSequences, settings: SIDSettings) -> CatalogueSIDs:
  """SIDs of every catalogue item of `train_seqs` (see the module docstring)."""
  s = settings
  vec = item_vectors.cooccurrence_vectors(train_seqs, dim=s.vector_dim, window=s.window, seed=s.seed)
  x = vec.vectors
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  unseen = int(np.sum(norm == 0))   # items without training events: zero vectors, one shared SID
  if s.normalize:
    x = x / np.where(norm > 0, norm, 1.0)
  codes, costs = _tokenize(x, s)
  before = collisions.collision_report(codes)
  report = {"route": vec.route, "tokenizer": s.tokenizer, "settings": dataclasses.asdict(s),
            "items_without_training_events": unseen, "before_dedup": before,
            "usage": [dataclasses.asdict(u) for u in codes_lib.codebook_usage(codes, s.codebook_size)]}
  if s.dedup == "append_level":
    codes = collisions.append_disambiguation_level(codes)
    if codes[:, -1].max() >= s.codebook_size:
      raise ValueError(f"sid.dedup='append_level': a collision group holds {codes[:, -1].max() + 1} items, more "
                       f"than sid.codebook_size={s.codebook_size} dedup codes; raise the codebook size")
  elif s.dedup == "reassign":
    repair = collisions.reassign_last_level(codes, costs)
    codes = repair.codes
    report["reassigned_items"] = repair.num_moved
  report["after_dedup"] = collisions.collision_report(codes)
  return CatalogueSIDs(vec.item_ids.astype(np.int64), codes.astype(np.int64), s.codebook_size,
                       json.loads(json.dumps(report, default=_jsonable)))


def _jsonable(x):
  return x.item() if hasattr(x, "item") else x.tolist() if hasattr(x, "tolist") else str(x)


def cache_path(cache_dir: str, fingerprint: str) -> str:
  return os.path.join(cache_dir, f"sids_{fingerprint}.npz")


def load_or_build(cache_dir: str, fingerprint: str, build) -> tuple[CatalogueSIDs, bool]:
  """The SIDs cached under `fingerprint`, or `build()` written there -> (sids, read_from_cache)."""
  path = cache_path(cache_dir, fingerprint)
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as f:
      stored = str(f["fingerprint"])
      if stored == fingerprint:
        return CatalogueSIDs(f["item_ids"], f["codes"], int(f["codebook_size"]), json.loads(str(f["report"]))), True
    logging.warning("%s was written for fingerprint %s, not %s: rebuilding", path, stored, fingerprint)
  sids = build()
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + ".tmp.npz"   # written then renamed: an interrupted write never looks like a cache
  np.savez(tmp, fingerprint=np.array(fingerprint), item_ids=sids.item_ids, codes=sids.codes_NL,
           codebook_size=np.array(sids.codebook_size), report=np.array(json.dumps(sids.report)))
  os.replace(tmp, path)
  return sids, False
