"""Config checks of the trainer: model hooks resolve data-dependent settings, and a resume refuses a
config that differs from its checkpoint's (naming the keys) unless told otherwise."""
import types

import ml_collections
import pytest

from configs import base
from recjax.train import config_check, loop
from tests.conftest import write_cyclic_sequences


def _with_time_bias(setting):
  """base() with model.use_time_bias = setting (a bool too: the typed ConfigDict is rebuilt)."""
  c = base.base()
  c.model = ml_collections.ConfigDict({**c.model.to_dict(), "use_time_bias": setting})
  return c


def _seqs(has_timestamps):
  return types.SimpleNamespace(has_timestamps=has_timestamps, source="seqs.txt")


@pytest.mark.parametrize("setting,timestamps,want,note", [
    ("auto", True, True, None),
    ("auto", False, False, "time bias off: the dataset has no timestamps (position bias only)"),
    ("on", True, True, None),
    (True, True, True, None),
    ("off", True, False, "time bias off (model.use_time_bias='off')"),
    ("off", False, False, "time bias off (model.use_time_bias='off')"),
    (False, False, False, "time bias off (model.use_time_bias='off')"),
])
def test_hstu_time_bias(setting, timestamps, want, note):
  c = _with_time_bias(setting)
  cfg, notes = loop.resolve_model_config(c, _seqs(timestamps))
  assert cfg["use_time_bias"] is want
  assert notes == ([note] if note else [])
  assert c.model.use_time_bias == setting   # the config itself is left as it was
  rest = {k: v for k, v in cfg.items() if k != "use_time_bias"}
  assert rest == {k: v for k, v in c.model.copy_and_resolve_references().items() if k != "use_time_bias"}


@pytest.mark.parametrize("setting", ["on", True])
def test_hstu_time_bias_on_without_timestamps_is_an_error(setting):
  c = _with_time_bias(setting)
  with pytest.raises(ValueError, match=r"model.use_time_bias=('on'|True) but seqs.txt has no timestamps"):
    loop.resolve_model_config(c, _seqs(False))


def test_hstu_time_bias_bad_value():
  c = base.base()
  c.model.use_time_bias = "sometimes"
  with pytest.raises(ValueError, match="must be 'auto', 'on' or 'off', got 'sometimes'"):
    loop.resolve_model_config(c, _seqs(True))


def test_resolved_references_follow_data_max_len():
  c = base.base()
  c.data.max_len = 50
  cfg, _ = loop.resolve_model_config(c, _seqs(True))
  assert (cfg["max_len"], cfg["attn_norm_len"]) == (50, 61)


def test_sasrec_untouched_and_unknown_model():
  from configs import sasrec_ml1m
  c = sasrec_ml1m.get_config()
  for timestamps in (True, False):
    cfg, notes = loop.resolve_model_config(c, _seqs(timestamps))
    assert cfg == c.model.to_dict() and notes == []
  c.model.name = "nope"
  with pytest.raises(ValueError, match="unknown model.name 'nope'"):
    loop.resolve_model_config(c, _seqs(True))


# ---------------------------------------------------------------------------------------------
# Resume with another config
# ---------------------------------------------------------------------------------------------

def test_config_changes_and_allowed_keys():
  old = config_check.config_record(base.base())
  new = base.base()
  new.train.num_epochs = 5
  new.eval.ks = (1, 10)
  assert config_check.check_resume(old, new) == {"eval.ks": ([1, 10, 50, 200], [1, 10]),
                                                 "train.num_epochs": (101, 5)}
  new.model.dim = 64
  new.data.max_len = 100   # also moves model.max_len and model.attn_norm_len (references)
  new.loss.extra = 1
  with pytest.raises(config_check.ConfigMismatchError) as e:
    config_check.check_resume(old, new)
  msg = str(e.value)
  assert "in 5 key(s)" in msg
  for line in ("data.max_len: 200 -> 100", "model.attn_norm_len: 211 -> 111", "model.dim: 50 -> 64",
               "model.max_len: 200 -> 100", "loss.extra: '<absent>' -> 1", "--allow_config_change"):
    assert line in msg
  assert "train.num_epochs" not in msg.split("(keys that may")[0]
  assert len(config_check.check_resume(old, new, allow_change=True)) == 7
  assert config_check.check_resume(None, new) == {}   # checkpoints from before configs were stored


def test_checkpoints_from_before_tasks_resume_as_retrieval_only():
  """A checkpoint written before config.task existed stores no task / ranking keys: a retrieval
  config resumes it (the new keys' absence is no change), a ranking config does not."""
  old = config_check.config_record(base.base())
  del old["task"], old["ranking"]
  del old["train"]["count_flops"]
  changes = config_check.check_resume(old, base.base())
  assert set(changes) == {"train.count_flops"}, changes    # resumable, recorded in the segments
  ranking = base.base()
  ranking.task = "ranking"
  with pytest.raises(config_check.ConfigMismatchError, match="task: '<absent>' -> 'ranking'"):
    config_check.check_resume(old, ranking)
  stored_retrieval = config_check.config_record(base.base())   # written with tasks: checked as usual
  with pytest.raises(config_check.ConfigMismatchError, match="task: 'retrieval' -> 'ranking'"):
    config_check.check_resume(stored_retrieval, ranking)


def _tiny(tmp_path, **train):
  c = base.base()
  c.name = "tiny"
  c.data.kind = "text"
  c.data.path = write_cyclic_sequences(tmp_path / "seqs.txt", num_users=40)
  c.data.max_len = 10
  c.model.update(dict(dim=8, dqk=8, dv=8, num_blocks=1))
  c.loss.update(dict(num_negatives=4, token_bucket=64, chunk=32))
  c.train.update({"batch_size": 16, "num_epochs": 1, "max_steps": 2, "log_every_steps": 1,
                  "eval_every_epochs": 0, **train})
  c.eval.update(dict(batch_size=64, ks=(1, 10), exclude_history=False))
  return c


def test_resume_checks_the_stored_config(tmp_path):
  workdir = str(tmp_path / "w")
  first = loop.train_and_evaluate(_tiny(tmp_path), workdir)
  assert first["steps"] == 2
  changed = _tiny(tmp_path)
  changed.model.dim = 16          # would also fail to restore: checked before the state is read
  changed.train.learning_rate = 0.5
  with pytest.raises(config_check.ConfigMismatchError) as e:
    loop.train_and_evaluate(changed, workdir)
  assert "model.dim: 8 -> 16" in str(e.value) and "train.learning_rate: 0.001 -> 0.5" in str(e.value)
  # Allowed keys resume without a word; the change is recorded in the new segment.
  longer = loop.train_and_evaluate(_tiny(tmp_path, max_steps=3, log_every_steps=3), workdir)
  assert longer["steps"] == 3 and len(longer["segments"]) == 2
  assert longer["segments"][1]["config_changes"] == {"train.log_every_steps": [1, 3], "train.max_steps": [2, 3]}
  # --allow_config_change: continues with the new learning rate, and says so.
  forced = _tiny(tmp_path, max_steps=3, log_every_steps=3, learning_rate=0.5)
  out = loop.train_and_evaluate(forced, workdir, allow_config_change=True)
  assert out["segments"][-1]["config_changes"] == {"train.learning_rate": [0.001, 0.5]}
