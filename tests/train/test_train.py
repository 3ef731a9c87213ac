"""End to end: a tiny run learns, NaN losses stop the run, and a SIGKILLed run resumes exactly."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, write_cyclic_sequences

TINY_CONFIG = """
from configs import base

def get_config(arg=None):
  c = base.base()
  c.name = "tiny"
  c.dataset_label = "tiny"
  c.data.kind = "text"
  c.data.path = {path!r}
  c.data.max_len = 20
  c.model.dim = 16
  c.model.dqk = 8
  c.model.dv = 8
  c.model.num_blocks = 1
  c.model.attn_norm_len = 20
  c.model.dropout = 0.1
  c.loss.num_negatives = 8
  c.loss.token_bucket = 64
  c.loss.chunk = 32
  c.train.batch_size = 16
  c.train.num_epochs = {epochs}
  c.train.learning_rate = float("{lr}")
  c.train.checkpoint_every_steps = {ckpt_every}
  c.train.log_every_steps = 4
  c.train.eval_every_epochs = 2
  c.eval.batch_size = 64
  c.eval.exclude_history = {exclude}   # cyclic histories repeat their items: off unless a test asks
  return c
"""


def _config(tmp_path, epochs=6, lr=1e-2, ckpt_every=4, exclude=False, data=None):
  data = data or write_cyclic_sequences(tmp_path / "seqs.txt")
  path = tmp_path / "tiny_config.py"
  path.write_text(TINY_CONFIG.format(path=data, epochs=epochs, lr=lr, ckpt_every=ckpt_every, exclude=exclude))
  return str(path)


def _load(path):
  import ml_collections  # noqa: F401
  from ml_collections import config_flags  # noqa: F401
  import importlib.util
  spec = importlib.util.spec_from_file_location("tiny_config", path)
  mod = importlib.util.module_from_spec(spec)
  sys.path.insert(0, REPO)
  spec.loader.exec_module(mod)
  return mod.get_config()


def test_tiny_run_learns(reference_run):
  """The reference run (`experiments.run`, REFERENCE_EPOCHS epochs) learns the cycles, keeps its
  per-epoch history and writes TensorBoard events. It shares the SIGKILL tests' run instead of
  training its own 12 epochs (measured: hr@10 1.0 and mrr 0.42 at epoch 2, mrr 0.53 at epoch 4)."""
  r = reference_run["results"]
  test = r["metrics"]["test"]
  # 30 items: a random ranking gives HR@10 ≈ 1/3 and MRR ≈ 0.13; cycles are learnable.
  assert test["hr@10"] > 0.6, test
  assert test["mrr"] > 0.3, test
  assert r["metrics"]["per_epoch"], "per-epoch evaluation history is missing"
  assert os.listdir(reference_run["workdir"] / "tensorboard"), "no TensorBoard event file"


def _ranks_by_sets(model, params, examples, catalogue):
  """Brute force in float64 from the model's outputs: cosine scores, window items dropped with a
  Python set, a target in its window a miss. Returns (ranks with the window filter, ranks without),
  both from one forward pass per batch (the model runs eagerly here: the pass is the costly part)."""
  from recjax.data import pipeline
  from recjax.metrics.retrieval import MISS_RANK
  filtered, unfiltered = [], []
  for batch, n in pipeline.eval_batches(examples, 64):
    out, table = (np.asarray(x, np.float64) for x in model.apply({"params": params}, batch, train=False))
    table = table / np.linalg.norm(table, axis=1, keepdims=True)
    for r in range(n):
      u = out[r, batch["lengths"][r] - 1]
      u = u / np.linalg.norm(u)
      t = int(batch["targets"][r])
      for ranks, window in ((filtered, set(batch["ids"][r].tolist()) - {0}), (unfiltered, set())):
        if t in window:
          ranks.append(MISS_RANK)
          continue
        st = u @ table[t]
        ranks.append(1 + sum(1 for c in catalogue if c not in window and c != t and u @ table[c] > st))
  return np.array(filtered), np.array(unfiltered)


def test_end_to_end_with_history_filter(tmp_path, monkeypatch):
  """A few steps with eval.exclude_history=True (the setting behind every MovieLens number): the run's
  test metrics equal a brute force over the trained model's outputs with window items removed."""
  from recjax.metrics.retrieval import MISS_RANK, metrics_from_ranks
  from recjax.tasks import retrieval
  from recjax.train import loop
  seen = {}
  make_eval_step, eval_ranks = retrieval.make_eval_step, retrieval.eval_ranks

  def make_spy(model, catalogue, num_items, exclude_history, *args):
    seen.update(model=model, catalogue=np.asarray(catalogue).tolist(), exclude=exclude_history)
    return make_eval_step(model, catalogue, num_items, exclude_history, *args)

  def ranks_spy(eval_step, params, examples, batch_size):
    seen.update(params=params, examples=examples)   # the last call is the final test
    return eval_ranks(eval_step, params, examples, batch_size)

  monkeypatch.setattr(retrieval, "make_eval_step", make_spy)
  monkeypatch.setattr(retrieval, "eval_ranks", ranks_spy)
  config = _load(_config(tmp_path, epochs=1, exclude=True))
  seen["ks"] = tuple(config.eval.ks)
  config.train.max_steps = 6
  summary = loop.train_and_evaluate(config, str(tmp_path / "w"))
  assert seen["exclude"] is True
  ranks, unfiltered = _ranks_by_sets(seen["model"], seen["params"], seen["examples"], seen["catalogue"])
  assert (ranks == MISS_RANK).sum() > 5, "the data must put some targets inside their window"
  assert (ranks < unfiltered).sum() > 5, "and some window items above their target"
  want = metrics_from_ranks(ranks, seen["ks"])
  assert summary["metrics"]["test"] == pytest.approx(want, rel=1e-9), (summary["metrics"]["test"], want)


def test_nan_loss_stops_with_clear_error(tmp_path):
  from recjax.train import loop
  with pytest.raises(loop.NonFiniteLossError, match="step"):
    loop.train_and_evaluate(_load(_config(tmp_path, lr=float("nan"))), str(tmp_path / "w"))


def _run(config, workdir, results, **popen):
  cmd = [sys.executable, "-m", "experiments.run", f"--config={config}", f"--workdir={workdir}",
         f"--results={results}"]
  return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


# 4 epochs of 8 steps: long enough to learn (test_tiny_run_learns) and for a kill inside epoch 2 or
# later to leave epochs to resume; each subprocess run costs its start-up and compiles, not its steps.
REFERENCE_EPOCHS = 4


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """One uninterrupted `experiments.run`, shared by the learning test and the kill-and-resume tests:
  {"results": its results JSON, "workdir": its workdir}. Checkpoints only at epoch ends (they do not
  change the run: the resume tests compare runs checkpointing at other steps against it)."""
  tmp = tmp_path_factory.mktemp("reference")
  ref = _run(_config(tmp, epochs=REFERENCE_EPOCHS, ckpt_every=1000), tmp / "ref", tmp / "ref.json")
  out, _ = ref.communicate(timeout=600)
  assert ref.returncode == 0, out[-3000:]
  return {"results": json.load(open(tmp / "ref.json")), "workdir": tmp / "ref"}


def _finished_checkpoints(ckpt_dir):
  return sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if ckpt_dir.exists() else []


def _kill_after_checkpoint(proc, ckpt_dir, wanted, timeout=300):
  """SIGKILLs `proc` once its latest finished checkpoint is a step with `wanted(step)`; returns it.

  The process is frozen with SIGSTOP before the final look, so no later checkpoint can appear
  between that look and the kill: the step returned is the one a rerun resumes from."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    steps = _finished_checkpoints(ckpt_dir)
    if steps and wanted(steps[-1]):
      proc.send_signal(signal.SIGSTOP)
      steps = _finished_checkpoints(ckpt_dir)
      if steps and wanted(steps[-1]):
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return steps[-1]
      proc.send_signal(signal.SIGCONT)
    time.sleep(0.01)
  proc.kill()
  out, _ = proc.communicate()
  raise AssertionError(f"no wanted checkpoint before the run ended; saw {_finished_checkpoints(ckpt_dir)}\n"
                       + (out or "")[-2000:])


@pytest.mark.parametrize("where", [
    "mid_epoch",
    pytest.param("epoch_boundary", marks=pytest.mark.slow),
])
def test_sigkill_then_resume_gives_same_metrics(tmp_path, reference_run, where):
  """SIGKILL right after a checkpoint, rerun the same command: the same steps, per-epoch history and
  test metrics as the uninterrupted run. Mid-epoch (checkpoints every 3 steps, 8 steps an epoch,
  killed in epoch 2 or later): the loader must resume inside a reshuffled epoch at the right batch."""
  reference = reference_run["results"]
  spe = reference["steps_per_epoch"]
  epochs = REFERENCE_EPOCHS
  if where == "mid_epoch":
    config, wanted = _config(tmp_path, epochs=epochs, ckpt_every=3), lambda s: s > spe and s % spe != 0
  else:   # only epoch-end checkpoints
    config, wanted = _config(tmp_path, epochs=epochs, ckpt_every=1000), lambda s: s % spe == 0
  victim = _run(config, tmp_path / "w", tmp_path / "w.json")
  killed_at = _kill_after_checkpoint(victim, tmp_path / "w" / "checkpoints", wanted)
  assert not (tmp_path / "w.json").exists(), "the run finished before it could be killed"
  assert killed_at < reference["steps"]

  resumed = _run(config, tmp_path / "w", tmp_path / "w.json")
  out, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, out[-3000:]
  assert f"resumed from checkpoint at step {killed_at}" in out, out[-3000:]
  a, b = reference, json.load(open(tmp_path / "w.json"))
  assert a["steps"] == b["steps"]
  assert a["metrics"]["test"] == b["metrics"]["test"]
  assert a["metrics"]["per_epoch"] == b["metrics"]["per_epoch"]
  assert a["train_flops"] == b["train_flops"] and b["train_flops"]["steps"] == b["steps"]   # carried by the checkpoint
  assert len(b["segments"]) == 2 and b["segments"][1]["start_step"] == killed_at
  for field in ("dataset", "model", "config", "command", "commit", "versions", "hardware", "wall_clock_s", "seed"):
    assert field in b, field


@pytest.mark.slow   # keeps the default suite under 10 minutes
def test_snapshot_evaluates_latest_checkpoint_as_partial(tmp_path):
  """--snapshot: the latest checkpoint's metrics, marked partial, and the run's workdir untouched."""
  from recjax.train import loop
  config_path = _config(tmp_path, epochs=6)
  config = _load(config_path)
  config.train.max_steps = 8   # a run stopped at step 8 of 12 (checkpoint every 4 steps)
  stopped = loop.train_and_evaluate(config, str(tmp_path / "w"))
  before = sorted(os.listdir(tmp_path / "w" / "checkpoints")), sorted(os.listdir(tmp_path / "w" / "tensorboard"))

  cmd = [sys.executable, "-m", "experiments.run", f"--config={config_path}", f"--workdir={tmp_path / 'w'}",
         f"--results={tmp_path / 'partial.json'}", "--snapshot"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  r = json.load(open(tmp_path / "partial.json"))
  assert r["partial"] is True and "step 8" in r["partial_note"], r.get("partial_note")
  assert r["steps"] == 8
  assert r["config_values"]["train"]["max_steps"] == -1, "the record must show the run's config, not the override"
  assert r["metrics"]["per_epoch"] == stopped["metrics"]["per_epoch"]
  assert r["metrics"]["test"] == pytest.approx(stopped["metrics"]["test"], rel=1e-6)
  after = sorted(os.listdir(tmp_path / "w" / "checkpoints")), sorted(os.listdir(tmp_path / "w" / "tensorboard"))
  assert before == after, "the snapshot wrote into the run's workdir"

  empty = subprocess.run(cmd[:4] + [f"--workdir={tmp_path / 'none'}", "--snapshot"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
  assert empty.returncode != 0 and "no finished checkpoint" in empty.stderr


def test_resume_under_another_eval_protocol_reevaluates_without_stale_history(reference_run, tmp_path):
  """A finished run resumed with a changed evaluation protocol (here `eval.exclude_history`, as
  `:history_removed` re-evaluates a Sports run) refuses without --allow_config_change; allowed, it
  trains nothing, measures the final parameters under the new protocol, and keeps the old
  protocol's per-epoch history aside instead of selecting an epoch from it."""
  import shutil
  from recjax.train import config_check, loop
  first = reference_run["results"]
  workdir = tmp_path / "w"
  shutil.copytree(reference_run["workdir"], workdir)
  changed = _load(_config(tmp_path, epochs=REFERENCE_EPOCHS, ckpt_every=1000, exclude=True,
                          data=str(reference_run["workdir"].parent / "seqs.txt")))
  with pytest.raises(config_check.ConfigMismatchError, match="eval.exclude_history"):
    loop.train_and_evaluate(changed, str(workdir))
  again = loop.train_and_evaluate(changed, str(workdir), allow_config_change=True)
  assert again["steps"] == first["steps"]
  assert again["metrics"]["per_epoch"] == []
  assert "best_epoch" not in again["metrics"]
  assert again["metrics"]["per_epoch_before_eval_change"] == first["metrics"]["per_epoch"]
  assert again["segments"][-1]["config_changes"] == {"eval.exclude_history": [False, True]}
  # Cyclic histories hold most targets, which count as misses once history items are removed.
  assert again["metrics"]["test"]["hr@10"] < first["metrics"]["test"]["hr@10"] - 0.2, (
      again["metrics"]["test"], first["metrics"]["test"])


def test_only_protocol_keys_count_as_evaluation_changes():
  from recjax.train import config_check
  assert config_check.changes_evaluation("eval.exclude_history")
  assert not config_check.changes_evaluation("eval.batch_size")
  assert not config_check.changes_evaluation("train.num_epochs")


RANKING_CONFIG = """
from configs import dlrm_rank_synthetic

def get_config(arg=None):
  c = dlrm_rank_synthetic.get_config("quick")
  c.name = "tiny_ranking"
  c.train.checkpoint_every_steps = {ckpt_every}
  return c
"""


@pytest.mark.slow   # keeps the default suite under 10 minutes; the retrieval SIGKILL test stays
def test_ranking_sigkill_then_resume_gives_same_metrics(tmp_path):
  """The ranking task through the same loop: SIGKILL mid-epoch right after a checkpoint, rerun: the
  same steps, per-epoch history (valid and test) and test metrics as an uninterrupted run, so the
  ranking loader's position is restored with the train state."""
  def config(name, ckpt_every):
    path = tmp_path / f"{name}.py"
    path.write_text(RANKING_CONFIG.format(ckpt_every=ckpt_every))
    return str(path)

  ref = _run(config("ref", 1000), tmp_path / "ref", tmp_path / "ref.json")
  out, _ = ref.communicate(timeout=600)
  assert ref.returncode == 0, out[-3000:]
  a = json.load(open(tmp_path / "ref.json"))
  spe = a["steps_per_epoch"]
  assert a["steps"] > spe + 2, "the quick ranking run must span more than one epoch"

  victim_config = config("victim", 3)
  victim = _run(victim_config, tmp_path / "w", tmp_path / "w.json")
  killed_at = _kill_after_checkpoint(victim, tmp_path / "w" / "checkpoints", lambda s: s > spe and s % spe != 0)
  resumed = _run(victim_config, tmp_path / "w", tmp_path / "w.json")
  out, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, out[-3000:]
  assert f"resumed from checkpoint at step {killed_at}" in out, out[-3000:]
  b = json.load(open(tmp_path / "w.json"))
  same = lambda x, y: json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)   # NaN-aware
  assert a["steps"] == b["steps"]
  assert same(a["metrics"]["test"], b["metrics"]["test"])
  assert same(a["metrics"]["per_epoch"], b["metrics"]["per_epoch"])
  assert b["task"] == "ranking" and "mean" in b["metrics"]["test"]
