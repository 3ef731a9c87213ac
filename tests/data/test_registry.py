"""registry: every data key it reads is declared in configs/base.py, and the array_record cache is
keyed by the data config (another data config -> another folder; the same one -> reused)."""
import ast
import inspect
import os

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from configs import base
from recjax.data import registry, tfds_builder
from tests.conftest import REPO, write_cyclic_sequences


def _keys_read_by_registry() -> set[str]:
  """data config keys named in registry.py's source: data_cfg.<key>, data_cfg.get("<key>"),
  _get(data_cfg, "<key>"), data_cfg["<key>"], plus SOURCE_KEYS and DEFAULTS."""
  tree = ast.parse(inspect.getsource(registry))
  keys = set(registry.DEFAULTS) | {k for ks in registry.SOURCE_KEYS.values() for k in ks}
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "data_cfg":
      if node.attr != "get":
        keys.add(node.attr)
    if isinstance(node, ast.Call):
      f = node.func
      is_get = isinstance(f, ast.Attribute) and f.attr == "get" and getattr(f.value, "id", None) == "data_cfg"
      is_helper = isinstance(f, ast.Name) and f.id == "_get"
      args = node.args[1:] if is_helper else node.args
      if (is_get or is_helper) and args and isinstance(args[0], ast.Constant):
        keys.add(args[0].value)
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "data_cfg":
      if isinstance(node.slice, ast.Constant):
        keys.add(node.slice.value)
  return keys


def test_every_key_registry_reads_is_declared_in_base():
  read = _keys_read_by_registry()
  assert {"kind", "data_dir", "path", "variant", "logs", "id_offset", "world", "array_record"} <= read
  assert read <= set(base.base().data), f"undeclared in configs/base.py: {sorted(read - set(base.base().data))}"
  for key, default in registry.DEFAULTS.items():   # a config without base gets base's defaults
    assert base.base().data[key] == default, key


def _parse(*argv):
  """The config as experiments/run.py gets it (locked) after `argv` command-line overrides."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=["prog", *argv])
  fv(["prog", *argv])
  return fv.config


def test_command_line_sets_declared_data_keys():
  c = _parse(f"--config={REPO}/configs/hstu_ml1m.py", "--config.data.kind=kuairand",
             "--config.data.variant=1k", "--config.data.logs=all", "--config.data.id_offset=1")
  assert (c.data.kind, c.data.variant, c.data.logs, c.data.id_offset) == ("kuairand", "1k", "all", 1)
  c = _parse(f"--config={REPO}/configs/hstu_synthetic.py", "--config.data.variant=27k")
  assert c.data.kind == "synthetic" and c.data.variant == "27k"
  with pytest.raises(Exception, match="nonexistent_key"):   # the lock still catches typos
    _parse(f"--config={REPO}/configs/hstu_ml1m.py", "--config.data.nonexistent_key=1")


def test_attn_norm_len_follows_max_len():
  assert base.base().model.attn_norm_len == 211   # the reference's 200 + 10 + 1
  c = _parse(f"--config={REPO}/configs/hstu_ml1m.py", "--config.data.max_len=50")
  assert (c.model.max_len, c.model.attn_norm_len) == (50, 61)
  c = _parse(f"--config={REPO}/configs/hstu_ml1m.py", "--config.data.max_len=50", "--config.model.attn_norm_len=64")
  assert c.model.attn_norm_len == 64
  c = _parse(f"--config={REPO}/configs/hstu_synthetic.py", "--config.data.max_len=80")
  assert c.model.attn_norm_len == 100   # a config that sets the number keeps it


def _text_cfg(path, **kw):
  c = base.base().data
  c.update({"kind": "text", "path": str(path), "array_record": True, **kw})
  return c


def _only_dataset_dir(cache):
  dirs = os.listdir(os.path.join(cache, "array_record"))
  return sorted(dirs)


def test_array_record_cache_is_keyed_by_the_data_config(tmp_path):
  src = write_cyclic_sequences(tmp_path / "seqs.txt", num_users=12)
  cache = str(tmp_path / "cache")
  a = registry.load_dataset(_text_cfg(src), cache)
  direct = registry.load_dataset(_text_cfg(src, array_record=False))
  np.testing.assert_array_equal(a.items, direct.items)
  (fp_a,) = _only_dataset_dir(cache)
  assert fp_a == registry.data_fingerprint(_text_cfg(src))
  meta = tfds_builder.read_metadata(os.path.join(cache, "array_record", fp_a), registry.ARRAY_RECORD_NAME)
  assert meta["provenance"]["data_spec"] == {"kind": "text", "path": src, "id_offset": 0}

  # The same data config reads the cache back: proven by replacing the source behind its back.
  write_cyclic_sequences(tmp_path / "seqs.txt", num_users=7, seed=1)
  again = registry.load_dataset(_text_cfg(src, max_len=7, protocol="last_two"), cache)   # split keys: same data
  np.testing.assert_array_equal(again.items, a.items)
  assert _only_dataset_dir(cache) == [fp_a]

  # Another data config gets another folder, built from the source as it is now.
  b = registry.load_dataset(_text_cfg(src, id_offset=5), cache)
  assert len(_only_dataset_dir(cache)) == 2 and b.num_users == 7
  fresh = registry.load_dataset(_text_cfg(src, id_offset=5, array_record=False))
  np.testing.assert_array_equal(b.items, fresh.items)


def test_fingerprint_is_stable_and_separates_data_settings(tmp_path):
  fp = registry.data_fingerprint
  syn = base.base().data
  syn.update(dict(kind="synthetic", world=dict(seed=0)))
  assert fp(syn) == fp(syn.copy_and_resolve_references())
  other = syn.copy_and_resolve_references()
  other.world.seed = 1
  assert fp(other) != fp(syn)
  explicit = syn.copy_and_resolve_references()
  explicit.world.num_users = 2000   # the WorldConfig default, spelled out: same data
  assert fp(explicit) == fp(syn)
  for key, value in (("logs", "all"),):
    changed = syn.copy_and_resolve_references()
    changed[key] = value
    assert fp(changed) != fp(syn)
  unused = syn.copy_and_resolve_references()
  unused.update(dict(variant="1k", path="x", max_len=5, protocol="last_two", array_record=False))
  assert fp(unused) == fp(syn)   # keys synthetic data does not read
  kr = base.base().data
  kr.update(dict(kind="kuairand", data_dir="../shared/data/kuairand"))
  kr_1k = kr.copy_and_resolve_references()
  kr_1k.variant = "1k"
  assert len({fp(kr), fp(kr_1k), fp(syn), fp(base.base().data)}) == 4
  with pytest.raises(ValueError, match="data.kind='text' needs config key data.path"):
    fp(type(syn)(dict(kind="text")))


def test_interrupted_or_foreign_cache(tmp_path):
  src = write_cyclic_sequences(tmp_path / "seqs.txt", num_users=10)
  cache = str(tmp_path / "cache")
  cfg = _text_cfg(src)
  registry.load_dataset(cfg, cache)
  version = tfds_builder.version_dir(os.path.join(cache, "array_record", registry.data_fingerprint(cfg)),
                                     registry.ARRAY_RECORD_NAME)
  os.remove(os.path.join(version, tfds_builder.META_FILE))   # a write killed before its metadata
  assert registry.load_dataset(cfg, cache).num_users == 10     # rebuilt, not read half-written
  other = _text_cfg(src, id_offset=3)
  os.rename(os.path.join(cache, "array_record", registry.data_fingerprint(cfg)),
            os.path.join(cache, "array_record", registry.data_fingerprint(other)))
  with pytest.raises(ValueError, match="was written for data fingerprint"):
    registry.load_dataset(other, cache)
