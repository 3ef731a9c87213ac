"""The one SID builder (`semantic_ids.catalogue_sids`) reproduces the two builders it replaced, under
each config's `config.sid`, so the committed results (results/ml-100k/sid_hstu_ml100k_*_short.json,
results/amazon-sports/tiger_amazon_sports_short.json) stay attributable to today's code.

`data/legacy_sid_codes.npz` was written by the OLD code (`tasks/sid_items.build_sid_tokens` for the
retrieval item table, the old `catalogue_sids.build_catalogue_sids` for the generative task), run on
`legacy_inputs` (an invented 300-movie catalogue and user sequences) in the commit that merged the
builders, before the old code was deleted. The `_k8` / `_k32` rows are the same settings with a
smaller codebook (the quick default test); the full settings are `slow` (a K=256 fit each)."""
import os

import ml_collections
import numpy as np
import pytest

from configs import sid_hstu_ml100k, sid_hstu_ml1m, tiger_amazon_sports
from recjax.data import registry, splits
from recjax.tasks import sid_items
from tests.semantic_ids import legacy_inputs

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy_sid_codes.npz")
RETRIEVAL = {"sid_hstu_ml1m": (sid_hstu_ml1m, None), "sid_hstu_ml100k": (sid_hstu_ml100k, None),
             "sid_hstu_ml100k_k8": (sid_hstu_ml100k, 8)}
GENERATIVE = {"tiger_amazon_sports": None, "tiger_amazon_sports_k32": 32}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("legacy"))
  dirs = legacy_inputs.write_movielens(root)
  seqs = registry.load_dataset(ml_collections.ConfigDict(
      {"kind": "text", "path": legacy_inputs.write_sequences(os.path.join(root, "seqs.txt")), "id_offset": 0}))
  with np.load(LEGACY) as f:
    legacy = dict(f)
  return root, dirs, seqs, legacy


def _retrieval(inputs, name):
  root, dirs, seqs, legacy = inputs
  module, k = RETRIEVAL[name]
  c = module.get_config("sid")
  if k:
    c.sid.codebook_size = k
  data_cfg = ml_collections.ConfigDict({"kind": "movielens", "name": c.data.name, "data_dir": dirs[c.data.name]})
  n = legacy_inputs.NUM_ITEMS
  tokens, report = sid_items.build_sid_tokens(c.sid, data_cfg, n + 1, np.arange(1, n + 1),
                                              splits.training_sequences(seqs), os.path.join(root, name))
  assert report["route"] == "content:tfidf"
  np.testing.assert_array_equal(tokens.tokens_VL, legacy[f"{name}/tokens_VL"])
  assert list(tokens.level_sizes) == legacy[f"{name}/level_sizes"].tolist()


def _generative(inputs, name):
  root, _, seqs, legacy = inputs
  c = tiger_amazon_sports.get_config()
  if GENERATIVE[name]:
    c.sid.codebook_size = GENERATIVE[name]
  data_cfg = ml_collections.ConfigDict({"kind": "text", "path": os.path.join(root, "seqs.txt"), "id_offset": 0})
  _, sids, _, _ = sid_items.catalogue_sids_for(c.sid, data_cfg, seqs.catalogue(),
                                               splits.training_sequences(seqs, "last_two"), os.path.join(root, name))
  np.testing.assert_array_equal(sids.item_ids, legacy[f"{name}/item_ids"])
  np.testing.assert_array_equal(sids.codes_NL, legacy[f"{name}/codes_NL"])


def test_small_codebook_settings_reproduce_the_old_builders(inputs):
  _retrieval(inputs, "sid_hstu_ml100k_k8")
  _generative(inputs, "tiger_amazon_sports_k32")


@pytest.mark.slow   # three K=128..256 RQ-KMeans fits (tens of seconds on a shared 2-core machine)
def test_each_configs_settings_reproduce_the_old_builders(inputs):
  _retrieval(inputs, "sid_hstu_ml1m")
  _retrieval(inputs, "sid_hstu_ml100k")
  _generative(inputs, "tiger_amazon_sports")
