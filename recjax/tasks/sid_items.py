"""`config.sid` -> the SID token map of a retrieval model's item table (`model.item_table="sid"`).

    item vectors (route) -> tokenizer codes [N, L] -> (+ disambiguation level) -> tokens [V, L']

Routes: "content" reads the MovieLens item file of `config.data` (ML-1M `movies.dat`, ML-100K
`u.item`: titles, with the year, TF-IDF beside genre one-hots, `semantic_ids.item_vectors`);
"collab" is PPMI + SVD of item co-occurrences in the training sequences only (what the split
leaves for training: evaluated targets never shape the codes; cold items get zero vectors).
Tokenizers: "rq_kmeans" | "rq_vae" (`semantic_ids`). Content exists for every catalogue item, so a
cold item (`data.cold_items`) gets codes from its content like any other: that is the point.

Tokens: "codes" (level l's table has K rows, one per code) or "prefixes" (one row per distinct
SID prefix of length l + 1). Items sharing a full SID would share a vector; `disambiguate` adds
TIGER's extra level (the item's index inside its collision group) so they do not.

Built once per run and cached as `<cache_dir>/<fingerprint>.npz`, the fingerprint hashing the
data spec, the sid settings, the catalogue and (collab) the training sequences: a second run with
the same settings reads the file; any change writes another.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from absl import logging
import numpy as np

from recjax.data import movielens, registry
from recjax.data.types import UserSequences
from recjax.layers.sid_embedding import SIDTokens
from recjax.semantic_ids import collisions, item_vectors, rq_kmeans, rq_vae
from recjax.semantic_ids.codes import codebook_usage

ROUTES = ("content", "collab")
TOKENIZERS = ("rq_kmeans", "rq_vae")
TOKEN_KINDS = ("codes", "prefixes")
CACHE_VERSION = 2
DEFAULTS = {"route": "content", "tokenizer": "rq_kmeans", "num_levels": 3, "codebook_size": 64,
            "tokens": "codes", "disambiguate": True, "vector_dim": 64, "category_weight": 1.0,
            "min_df": 2, "seed": 0, "rq_vae_steps": 3000}


@dataclasses.dataclass(frozen=True)
class SIDSettings:
  """`config.sid`, validated (DEFAULTS for unset keys)."""
  route: str = DEFAULTS["route"]
  tokenizer: str = DEFAULTS["tokenizer"]
  num_levels: int = DEFAULTS["num_levels"]
  codebook_size: int = DEFAULTS["codebook_size"]
  tokens: str = DEFAULTS["tokens"]
  disambiguate: bool = DEFAULTS["disambiguate"]
  vector_dim: int = DEFAULTS["vector_dim"]          # SVD width of the item vectors (0 = raw)
  category_weight: float = DEFAULTS["category_weight"]
  min_df: int = DEFAULTS["min_df"]
  seed: int = DEFAULTS["seed"]
  rq_vae_steps: int = DEFAULTS["rq_vae_steps"]

  def __post_init__(self):
    for name, value, known in (("route", self.route, ROUTES), ("tokenizer", self.tokenizer, TOKENIZERS),
                               ("tokens", self.tokens, TOKEN_KINDS)):
      if value not in known:
        raise ValueError(f"sid.{name} must be one of {known}, got {value!r}")
    if self.num_levels < 1 or self.codebook_size < 2 or self.vector_dim < 0:
      raise ValueError(f"sid: need num_levels >= 1, codebook_size >= 2, vector_dim >= 0, got {self}")

  @classmethod
  def from_config(cls, sid_cfg) -> "SIDSettings":
    d = dict(sid_cfg.to_dict() if hasattr(sid_cfg, "to_dict") else (sid_cfg or {}))
    unknown = sorted(set(d) - set(DEFAULTS))
    if unknown:
      raise ValueError(f"unknown config.sid key(s) {unknown}; known: {sorted(DEFAULTS)}")
    return cls(**d)


def _content(data_cfg, item_ids: np.ndarray, s: SIDSettings) -> item_vectors.ItemVectors:
  """Content vectors of `item_ids` from the MovieLens item file `data_cfg` names."""
  if data_cfg.kind != "movielens" or data_cfg.name not in ("ml-1m", "ml-100k"):
    raise ValueError(f"sid.route='content' reads MovieLens item files (ml-1m movies.dat, ml-100k u.item); "
                     f"data is {data_cfg.kind}/{data_cfg.get('name')}: use sid.route='collab'")
  data_dir = registry.resolve_path(data_cfg.data_dir)
  if data_cfg.name == "ml-1m":
    path = os.path.join(data_dir, "movies.dat")
    items = movielens.read_ml1m_movies(path)
    genres = [list(g) for g in items["genres"]]
  else:
    path = os.path.join(data_dir, "u.item")
    items = movielens.read_ml100k_items(path)
    genres = [[g for g, on in zip(movielens.ML100K_GENRES, row) if on] for row in items["genres"]]
  row_of = {int(m): r for r, m in enumerate(items["movie_id"])}
  missing = [int(v) for v in item_ids if int(v) not in row_of]
  if missing:
    raise ValueError(f"{path}: {len(missing)} catalogue item(s) have no row, e.g. movie id {missing[0]}")
  rows = [row_of[int(v)] for v in item_ids]
  return item_vectors.content_vectors(item_ids, [items["title"][r] for r in rows], [genres[r] for r in rows],
                                      category_weight=s.category_weight, min_df=s.min_df,
                                      dim=s.vector_dim or None, seed=s.seed)


def _codes(x_ND: np.ndarray, s: SIDSettings) -> np.ndarray:
  if s.tokenizer == "rq_kmeans":
    return rq_kmeans.fit_rq_kmeans(x_ND, rq_kmeans.RQKMeansConfig(s.num_levels, s.codebook_size, seed=s.seed)).encode(x_ND)
  cfg = rq_vae.RQVAEConfig(num_levels=s.num_levels, codebook_size=s.codebook_size, num_steps=s.rq_vae_steps,
                           batch_size=min(1024, len(x_ND)), seed=s.seed)
  return rq_vae.fit_rq_vae(x_ND, cfg).encode(x_ND)


def tokens_from_codes(codes_NL: np.ndarray, kind: str, codebook_size: int, code_levels: int
                      ) -> tuple[np.ndarray, list[int]]:
  """Codes [N, L] -> (table rows [N, L], rows per level). "codes": the code itself; the first
  `code_levels` levels (the tokenizer's) get K rows, later ones (the disambiguation level) max + 1;
  "prefixes": the index of the item's length-(l + 1) prefix among the distinct ones."""
  codes = np.asarray(codes_NL, np.int64)
  if kind == "codes":
    return codes, [codebook_size if l < code_levels else int(codes[:, l].max()) + 1 for l in range(codes.shape[1])]
  tokens, sizes = np.empty_like(codes), []
  for l in range(codes.shape[1]):
    uniq, inv = np.unique(codes[:, :l + 1], axis=0, return_inverse=True)
    tokens[:, l], sizes = inv.reshape(-1), sizes + [len(uniq)]
  return tokens, sizes


def fingerprint(data_cfg, s: SIDSettings, catalogue: np.ndarray, train_seqs: UserSequences) -> str:
  spec = {"version": CACHE_VERSION, "data": registry.data_spec(data_cfg), "sid": dataclasses.asdict(s),
          "catalogue": hashlib.sha256(np.asarray(catalogue, np.int64).tobytes()).hexdigest()}
  if s.route == "collab":    # the codes depend on what the split left for training
    spec["train_items"] = hashlib.sha256(np.asarray(train_seqs.items, np.int32).tobytes()
                                         + np.asarray(train_seqs.offsets, np.int64).tobytes()).hexdigest()
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build_sid_tokens(sid_cfg, data_cfg, num_items: int, catalogue: np.ndarray, train_seqs: UserSequences,
                     cache_dir: str) -> tuple[SIDTokens, dict]:
  """-> (SIDTokens [num_items, L'], report for the results file). Rows outside the catalogue
  (padding row 0, unlisted ids) get token 0 at every level: they are never scored nor embedded."""
  s = SIDSettings.from_config(sid_cfg)
  catalogue = np.asarray(catalogue, np.int64)
  fp = fingerprint(data_cfg, s, catalogue, train_seqs)
  path = os.path.join(cache_dir, f"{fp}.npz")
  if os.path.exists(path):
    with np.load(path) as f:
      if str(f["fingerprint"]) != fp:
        raise ValueError(f"{path} holds SID tokens of fingerprint {f['fingerprint']}, not {fp}; delete it")
      report = json.loads(str(f["report"]))
      report["cache"] = "read"
      return SIDTokens(f["tokens_VL"], tuple(int(n) for n in f["level_sizes"]), fp), report
  vecs = (_content(data_cfg, catalogue, s) if s.route == "content"
          else item_vectors.cooccurrence_vectors(dataclasses.replace(train_seqs, candidate_items=catalogue),
                                                 dim=s.vector_dim or 64, seed=s.seed))
  codes = _codes(vecs.vectors, s)
  report = {"route": vecs.route, "tokenizer": s.tokenizer, "settings": dataclasses.asdict(s),
            "collisions": collisions.collision_report(codes),
            "usage": [dataclasses.asdict(u) for u in codebook_usage(codes, s.codebook_size)]}
  if s.disambiguate:
    codes = collisions.append_disambiguation_level(codes)
  tokens_NL, sizes = tokens_from_codes(codes, s.tokens, s.codebook_size, s.num_levels)
  tokens_VL = np.zeros((num_items, tokens_NL.shape[1]), np.int32)
  tokens_VL[catalogue] = tokens_NL
  report.update({"level_sizes": sizes, "table_rows": int(sum(sizes)), "fingerprint": fp})
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, tokens_VL=tokens_VL, level_sizes=np.asarray(sizes), fingerprint=fp, report=json.dumps(report))
  os.replace(tmp, path)
  logging.info("SID tokens %s: %d levels, %d rows, collision rate %.3f -> %s", vecs.route, len(sizes),
               sum(sizes), report["collisions"]["collision_rate"], path)
  report["cache"] = "written"
  return SIDTokens(tokens_VL, tuple(sizes), fp), report
