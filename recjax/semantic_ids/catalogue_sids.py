"""The catalogue's SIDs for one run, the one builder both SID tasks call: item vectors (route) ->
tokenizer codes [N, L] -> collision handling -> codes [N, L'], cached under a fingerprint.

    settings = SIDSettings.from_config(config.sid)
    sids, cached, fp = load_or_build(settings, data_spec, catalogue, train_seqs, cache_dir, content)
    sids.codes_NL     # int64 [N, L'] the SID of each catalogue item (L' = L + 1 with dedup "append_level")
    sids.item_ids     # int64 [N] their model ids (= catalogue)

Users: the generative task (TIGER decodes `codes_NL`) and the retrieval task's SID item table
(`tasks/sid_items.py` turns the codes into embedding-table rows, `sid.tokens`).

Vector routes (`sid.vectors`):
  "content:tfidf"  the item text the caller passes (titles, genres: `tasks/sid_items.py` reads the
                   MovieLens item files, ML-1M `movies.dat`, ML-100K `u.item`, via `data.movielens`):
                   TF-IDF of titles (with the year) beside genre one-hots (`category_weight`,
                   `min_df`), SVD to `vector_dim` (0 = raw). Content exists for every catalogue
                   item, so a cold item gets codes like any other.
  "collab:ppmi"    PPMI of co-occurrences within `window` positions in the TRAINING sequences given
                   (held-out targets never shape the codes), SVD to `vector_dim`; items without
                   training events get zero vectors.
  "collab:ppmi+content:tfidf"
                   "collab:ppmi", with the items that have no training events (cold items, items
                   never rated) mapped from their content ("content:tfidf", raw, MovieLens item text)
                   into the collaborative space by ridge regression (`content_ridge`) fitted on the
                   items that have both (`item_vectors.fill_from_content`): warm items keep their
                   collaborative codes, cold items get codes near warm items like them in content.
`normalize` L2-normalises the vectors before the tokenizer (on Amazon Sports the raw SVD rows of
rare items crowd near 0: 18% of items collide, one SID holds 343; 5.6% and 73 after normalising).
Tokenizers (`sid.tokenizer`): "rq_kmeans" | "rq_vae". Collisions (`sid.dedup`): "append_level"
(TIGER: one more level holding each item's index inside its collision group), "reassign" (min-cost
last-level reassignment, `collisions.reassign_last_level`: zero collisions, same length; the
quantisation costs are RQ-KMeans's in input space or RQ-VAE's in its latent space) or "none" (keep them).

The cache file `<cache_dir>/sids_<fingerprint>.npz` stores the codes with the fingerprint that made
them; the fingerprint hashes the data spec, the construction settings, the catalogue and (collab)
the training sequences, so any change writes another file, and a file whose stored fingerprint
differs is rebuilt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from absl import logging
import numpy as np

from recjax.data.types import UserSequences
from recjax.semantic_ids import codes as codes_lib
from recjax.semantic_ids import collisions, item_vectors, rq_kmeans

ROUTES = ("content:tfidf", "collab:ppmi", "collab:ppmi+content:tfidf")
TOKENIZERS = ("rq_kmeans", "rq_vae")
DEDUP = ("append_level", "reassign", "none")
TOKEN_KINDS = ("codes", "prefixes")
# Bump when the construction changes: old cache files then no longer match any fingerprint.
VERSION = 4   # 4: collab rows of items without co-occurrences exactly zero (were ARPACK round-off)

ItemContent = tuple  # (titles [N] str, genre lists [N]) of the catalogue items, in catalogue order


@dataclasses.dataclass(frozen=True)
class SIDSettings:
  """`config.sid`, validated (field defaults for unset keys)."""
  vectors: str = "collab:ppmi"     # item-vector route (ROUTES)
  vector_dim: int = 64             # SVD width of the item vectors (content: 0 = raw)
  window: int = 5                  # collab: co-occurrence window (positions apart in one user's sequence)
  normalize: bool = True           # L2-normalise the vectors before the tokenizer (module docstring)
  category_weight: float = 1.0     # content: weight of the genre block beside the title TF-IDF
  min_df: int = 2                  # content: title tokens in fewer items are dropped
  tokenizer: str = "rq_kmeans"     # TOKENIZERS
  num_levels: int = 3              # L (before a dedup level)
  codebook_size: int = 256         # K codes per level
  dedup: str = "append_level"      # DEDUP
  tokens: str = "codes"            # retrieval SID item table only (`tasks/sid_items.py`): TOKEN_KINDS
  rq_vae_steps: int = 3000         # rq_vae only
  seed: int = 0
  kmeans_restarts: int = 1         # k-means runs per level, the lowest Σ D² kept (RQ-KMeans; RQ-VAE's codebook init)
  content_ridge: float = 3.0       # collab:ppmi+content:tfidf: ridge of the content -> collab map. 3 came
                                   # from a one-off check on ML-1M (an ad hoc script, not committed: held-out
                                   # cosine .46 / .50 / .54 / .56 / .56 at 0.1 / 0.3 / 1 / 3 / 10); every
                                   # build reports its own (the committed ML-1M runs: .570, mean vector .266)

  def __post_init__(self):
    for name, value, known in (("vectors", self.vectors, ROUTES), ("tokenizer", self.tokenizer, TOKENIZERS),
                               ("dedup", self.dedup, DEDUP), ("tokens", self.tokens, TOKEN_KINDS)):
      if value not in known:
        raise ValueError(f"sid.{name} must be one of {known}, got {value!r}")
    if min(self.window, self.num_levels) < 1 or self.codebook_size < 2 or self.vector_dim < 0:
      raise ValueError(f"sid: need window, num_levels >= 1, codebook_size >= 2, vector_dim >= 0, got {self}")
    if self.kmeans_restarts < 1:
      raise ValueError(f"sid.kmeans_restarts must be >= 1, got {self.kmeans_restarts}")
    if self.content_ridge <= 0:
      raise ValueError(f"sid.content_ridge must be > 0, got {self.content_ridge}")
    if self.vectors.startswith("collab:") and self.vector_dim < 1:
      raise ValueError(f"sid.vector_dim must be >= 1 for sid.vectors={self.vectors!r} (the SVD width)")

  @classmethod
  def from_config(cls, sid_cfg) -> "SIDSettings":
    """From `config.sid` (ConfigDict, dict or None); an unknown key fails naming it."""
    d = dict(sid_cfg.to_dict() if hasattr(sid_cfg, "to_dict") else (sid_cfg or {}))
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
      raise ValueError(f"unknown config.sid key(s) {unknown}; known: {sorted(known)}")
    return cls(**d)

  def construction(self) -> dict:
    """The settings the codes depend on (`tokens` only changes how a task reads them)."""
    d = dataclasses.asdict(self)
    del d["tokens"]
    if d["kmeans_restarts"] == 1:   # the single run every earlier cache was built with: same fingerprint
      del d["kmeans_restarts"]
    if self.vectors != "collab:ppmi+content:tfidf":   # only the hybrid route reads it
      del d["content_ridge"]
    return d

  @property
  def needs_content(self) -> bool:
    """The route reads the catalogue's item text (titles, genres)."""
    return self.vectors.endswith("content:tfidf")


@dataclasses.dataclass(frozen=True)
class CatalogueSIDs:
  item_ids: np.ndarray     # int64 [N] model ids
  codes_NL: np.ndarray     # int64 [N, L'] final SIDs (after collision handling)
  codebook_size: int       # K of the tokenizer levels
  report: dict             # JSON-able: route, tokenizer, settings, collisions before/after, usage per level

  @property
  def num_levels(self) -> int:
    return int(self.codes_NL.shape[1])

  def table(self, num_items: int) -> np.ndarray:
    """int32 [num_items, L'] codes by model id (rows of non-catalogue ids, e.g. padding 0, are 0)."""
    out = np.zeros((num_items, self.num_levels), np.int32)
    out[self.item_ids] = self.codes_NL
    return out


# -- step 1: item vectors -------------------------------------------------------------------------

def item_vectors_of(s: SIDSettings, catalogue: np.ndarray, train_seqs: UserSequences,
                    content: ItemContent | None) -> tuple[item_vectors.ItemVectors, dict]:
  """Rows for exactly `catalogue`, in its order -> (vectors, report extras)."""
  if s.needs_content:
    if content is None:
      raise ValueError(f"sid.vectors={s.vectors!r} needs the catalogue's item text (titles, genres); "
                       "this data has none: use sid.vectors='collab:ppmi'")
    titles, genres = content
    if len(titles) != len(catalogue):
      raise ValueError(f"sid content: {len(titles)} titles for {len(catalogue)} catalogue items")
    if s.vectors == "content:tfidf":
      return item_vectors.content_vectors(catalogue, titles, genres, category_weight=s.category_weight,
                                          min_df=s.min_df, dim=s.vector_dim or None, seed=s.seed), {}
  collab = item_vectors.cooccurrence_vectors(dataclasses.replace(train_seqs, candidate_items=catalogue),
                                             dim=s.vector_dim, window=s.window, seed=s.seed)
  if s.vectors == "collab:ppmi":
    return collab, {}
  raw_content = item_vectors.content_vectors(catalogue, titles, genres, category_weight=s.category_weight,
                                             min_df=s.min_df, dim=None, seed=s.seed).vectors
  fill = item_vectors.fill_from_content(collab, raw_content, ridge=s.content_ridge, seed=s.seed)
  return fill.vectors, {"content_filled": fill.filled, "content_map_holdout_cosine": fill.holdout_cosine,
                        "content_map_holdout_cosine_mean_vector": fill.holdout_cosine_mean_vector}


# -- step 2: tokenizer ----------------------------------------------------------------------------

def tokenize(x_ND: np.ndarray, s: SIDSettings) -> tuple[np.ndarray, np.ndarray | None]:
  """-> (codes int64 [N, L], last-level costs [N, K] when dedup="reassign", else None)."""
  if s.tokenizer == "rq_kmeans":
    tok = rq_kmeans.fit_rq_kmeans(x_ND, rq_kmeans.RQKMeansConfig(s.num_levels, s.codebook_size, seed=s.seed,
                                                                       restarts=s.kmeans_restarts))
    costs = rq_kmeans.last_level_costs(tok.residuals(x_ND), tok.codebooks_LKD) if s.dedup == "reassign" else None
    return tok.encode(x_ND).astype(np.int64), costs
  from recjax.semantic_ids import rq_vae  # pylint: disable=import-outside-toplevel
  tok = rq_vae.fit_rq_vae(x_ND, rq_vae.RQVAEConfig(num_levels=s.num_levels, codebook_size=s.codebook_size,
                                                   num_steps=s.rq_vae_steps, seed=s.seed,
                                                   kmeans_restarts=s.kmeans_restarts))
  # RQ-VAE quantises its latent: the repair's costs are the latent residual's distances to the last
  # level's codes, the same quantity as RQ-KMeans's in input space.
  costs = (rq_kmeans.last_level_costs(tok.residuals(x_ND), np.asarray(tok.params["codebooks"]))
           if s.dedup == "reassign" else None)
  return tok.encode(x_ND).astype(np.int64), costs


# -- step 3: collisions ---------------------------------------------------------------------------

def handle_collisions(codes_NL: np.ndarray, costs_NK: np.ndarray | None, s: SIDSettings) -> tuple[np.ndarray, dict]:
  """-> (codes [N, L'], report extras). "append_level": the extra level may exceed K - 1 when a
  group holds more than K items; a task that decodes the level with the K-code vocabulary checks."""
  if s.dedup == "append_level":
    return collisions.append_disambiguation_level(codes_NL), {}
  if s.dedup == "reassign":
    repair = collisions.reassign_last_level(codes_NL, costs_NK)
    return repair.codes, {"reassigned_items": repair.num_moved}
  return codes_NL, {}


def build_catalogue_sids(s: SIDSettings, catalogue, train_seqs: UserSequences,
                         content: ItemContent | None = None) -> CatalogueSIDs:
  """SIDs of every `catalogue` item (see the module docstring)."""
  catalogue = np.asarray(catalogue, np.int64)
  vec, vector_report = item_vectors_of(s, catalogue, train_seqs, content)
  x = vec.vectors
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  if s.normalize:
    x = x / np.where(norm > 0, norm, 1.0)
  codes, costs = tokenize(x, s)
  report = {"route": vec.route, "tokenizer": s.tokenizer, "settings": s.construction(),
            "zero_vectors": int(np.sum(norm == 0)),   # collab: items without training events, one shared SID
            **vector_report,
            "before_dedup": collisions.collision_report(codes),
            "usage": [dataclasses.asdict(u) for u in codes_lib.codebook_usage(codes, s.codebook_size)]}
  codes, extras = handle_collisions(codes, costs, s)
  report.update(extras)
  report["after_dedup"] = collisions.collision_report(codes)
  return CatalogueSIDs(vec.item_ids.astype(np.int64), codes.astype(np.int64), s.codebook_size,
                       json.loads(json.dumps(report, default=_jsonable)))


def _jsonable(x):
  return x.item() if hasattr(x, "item") else x.tolist() if hasattr(x, "tolist") else str(x)


# -- step 4: fingerprint and cache ----------------------------------------------------------------

def fingerprint(s: SIDSettings, data_spec: dict, catalogue, train_seqs: UserSequences) -> str:
  """16 hex digits of what the codes depend on: data, construction settings, catalogue and, for the
  collaborative route, the training sequences (which the split protocol decides)."""
  spec = {"version": VERSION, "data": data_spec, "sid": s.construction(),
          "catalogue": hashlib.sha256(np.asarray(catalogue, np.int64).tobytes()).hexdigest()}
  if s.vectors.startswith("collab:"):
    spec["train_items"] = hashlib.sha256(np.asarray(train_seqs.items, np.int32).tobytes()
                                         + np.asarray(train_seqs.offsets, np.int64).tobytes()).hexdigest()
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(cache_dir: str, fp: str) -> str:
  return os.path.join(cache_dir, f"sids_{fp}.npz")


def load_or_build_file(cache_dir: str, fp: str, build) -> tuple[CatalogueSIDs, bool]:
  """The SIDs cached under `fp`, or `build()` written there -> (sids, read_from_cache)."""
  path = cache_path(cache_dir, fp)
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as f:
      stored = str(f["fingerprint"])
      if stored == fp:
        return CatalogueSIDs(f["item_ids"], f["codes"], int(f["codebook_size"]), json.loads(str(f["report"]))), True
    logging.warning("%s was written for fingerprint %s, not %s: rebuilding", path, stored, fp)
  sids = build()
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + ".tmp.npz"   # written then renamed: an interrupted write never looks like a cache
  np.savez(tmp, fingerprint=np.array(fp), item_ids=sids.item_ids, codes=sids.codes_NL,
           codebook_size=np.array(sids.codebook_size), report=np.array(json.dumps(sids.report)))
  os.replace(tmp, path)
  return sids, False


def load_or_build(s: SIDSettings, data_spec: dict, catalogue, train_seqs: UserSequences, cache_dir: str,
                  content: ItemContent | None = None) -> tuple[CatalogueSIDs, bool, str]:
  """-> (sids, read_from_cache, fingerprint): the cached SIDs, or built and cached. `data_spec`
  (`data.registry.data_spec`) names the data for the fingerprint; `content` is the catalogue's
  (titles, genre lists), needed by the content route only."""
  catalogue = np.asarray(catalogue, np.int64)
  fp = fingerprint(s, data_spec, catalogue, train_seqs)
  sids, cached = load_or_build_file(cache_dir, fp, lambda: build_catalogue_sids(s, catalogue, train_seqs, content))
  if not np.array_equal(sids.item_ids, catalogue):
    raise ValueError(f"SIDs in {cache_path(cache_dir, fp)} do not cover the catalogue ({len(sids.item_ids)} "
                     f"items, catalogue {len(catalogue)}); delete the file")
  logging.info("SIDs %s (%s): %s -> %s, %d items x %d levels, collision rate before dedup %.4f", fp,
               "cached" if cached else "built", sids.report["route"], sids.report["tokenizer"],
               len(sids.item_ids), sids.num_levels, sids.report["before_dedup"]["collision_rate"])
  return sids, cached, fp
