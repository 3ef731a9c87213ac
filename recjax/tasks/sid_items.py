"""`config.sid` -> the catalogue's SIDs for a task, and the SID token map of a retrieval model's
item table (`model.item_table="sid"`).

    catalogue_sids_for: config.sid + data -> catalogue SIDs [N, L'] (`semantic_ids.catalogue_sids`,
                        the one builder, cached); the generative task decodes them
    build_sid_tokens:   those SIDs -> tokens [V, L'] (the retrieval SID item table)

The codes come from the shared builder (vector route, tokenizer, collision handling, fingerprint
and cache: see its docstring); this module gives it the data (the MovieLens item text for
`sid.vectors="content:tfidf"`, the data spec for the fingerprint) and turns codes into table rows.
`sid.tokens`: "codes" (level l's table has K rows, one per code; a level past the tokenizer's, the
disambiguation level, has max + 1) or "prefixes" (one row per distinct SID prefix of length
l + 1). With `sid.vectors="content:tfidf"` a cold item (`data.cold_items`) gets codes from its
content like any other: that is the point; "collab:ppmi+content:tfidf" gives it codes from its
content mapped into the collaborative space.
"""
from __future__ import annotations

import numpy as np

from recjax.data import movielens, registry
from recjax.data.types import UserSequences
from recjax.layers.sid_embedding import SIDTokens
from recjax.semantic_ids import catalogue_sids


def catalogue_sids_for(sid_cfg, data_cfg, catalogue: np.ndarray, train_seqs: UserSequences, cache_dir: str
                       ) -> tuple[catalogue_sids.SIDSettings, catalogue_sids.CatalogueSIDs, bool, str]:
  """-> (settings, sids, read_from_cache, fingerprint) for `config.sid` on the data `data_cfg` names;
  `train_seqs` must be the training part only (the collaborative route sees nothing else)."""
  s = catalogue_sids.SIDSettings.from_config(sid_cfg)
  content = None
  if s.needs_content:
    if data_cfg.kind != "movielens" or data_cfg.get("name") not in ("ml-1m", "ml-100k"):
      raise ValueError(f"sid.vectors={s.vectors!r} reads MovieLens item files (ml-1m movies.dat, ml-100k "
                       f"u.item); data is {data_cfg.kind}/{data_cfg.get('name')}: use sid.vectors='collab:ppmi'")
    content = movielens.item_content(data_cfg.name, registry.resolve_path(data_cfg.data_dir), catalogue)
  sids, cached, fp = catalogue_sids.load_or_build(s, registry.data_spec(data_cfg), catalogue, train_seqs,
                                                  cache_dir, content)
  return s, sids, cached, fp


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


def build_sid_tokens(sid_cfg, data_cfg, num_items: int, catalogue: np.ndarray, train_seqs: UserSequences,
                     cache_dir: str) -> tuple[SIDTokens, dict]:
  """-> (SIDTokens [num_items, L'], report for the results file). Rows outside the catalogue
  (padding row 0, unlisted ids) get token 0 at every level: they are never scored nor embedded."""
  catalogue = np.asarray(catalogue, np.int64)
  s, sids, cached, fp = catalogue_sids_for(sid_cfg, data_cfg, catalogue, train_seqs, cache_dir)
  tokens_NL, sizes = tokens_from_codes(sids.codes_NL, s.tokens, s.codebook_size, s.num_levels)
  tokens_VL = np.zeros((num_items, tokens_NL.shape[1]), np.int32)
  tokens_VL[catalogue] = tokens_NL
  report = {**sids.report, "tokens": s.tokens, "level_sizes": sizes, "table_rows": int(sum(sizes)),
            "fingerprint": fp, "cache": "read" if cached else "written"}
  return SIDTokens(tokens_VL, tuple(sizes), fp), report
