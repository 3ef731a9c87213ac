"""configs/long_sequences.py: every arm of issue 18's study resolves to the model it names, and
`experiments.run` trains and evaluates an arm at `quick` (one arm by default, a handful with -m slow)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import long_sequences as ls
from configs import long_world
from recjax.data import ranking as rk

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPLIT_FIELDS = {f.name for f in dataclasses.fields(rk.RankingSplit)}


def _split(c) -> rk.RankingSplit:
  return rk.RankingSplit(**{k: v for k, v in c.ranking.items() if k in SPLIT_FIELDS})


def test_every_arm_resolves_to_its_model():
  ref = ls.get_config("hstu_full,cpu")
  assert ref.data.world.to_dict() == long_world.CPU_WORLD and ref.ranking.history_len == 4096
  assert ls.get_config("hstu_full").data.world.to_dict() == long_world.WORLD
  multi = ls.get_config("hstu_full,cpu_multi")   # the CPU world with ten dormant topics: only the world differs
  assert multi.data.world.to_dict() == long_world.CPU_MULTI_WORLD and multi.name == "long_sequences_cpu_multi_hstu_full"
  assert multi.study.preset == "cpu_multi" and multi.ranking == ref.ranking and multi.model == ref.model
  names = set()
  for arm in ls.ARMS:
    for extras in (",cpu", ",cpu,quick", "", ",cpu_multi"):
      c = ls.get_config(arm + extras)
      split = _split(c)
      assert split.history_layout == "ragged" and split.buckets()[-1] == c.model.max_history == split.history_len
      assert (c.model.dim, c.model.num_blocks, c.model.num_heads) == (64, 2, 2), arm   # widths matched
      assert c.study.arm == arm and c.study.preset == (extras.split(",")[1] if extras else "world")
      tokens_per_event = 2 if c.model.get("token_layout") == "interleaved" else 1
      assert c.model.attn_norm_len <= tokens_per_event * c.model.max_history + c.ranking.request_size
      names.add(c.name + ("_quick" if c.quick else ""))
  assert len(names) == 4 * len(ls.ARMS), "run names collide"
  m = {arm: ls.get_config(arm + ",cpu").model for arm in ls.ARMS}
  assert ls.get_config("hstu_newest256,cpu").ranking.history_len == 256
  assert ls.get_config("hstu_sl,cpu").ranking.sl_alpha == ls.SL_ALPHA and m["hstu_sl"] == m["hstu_full"]
  assert all(ls.get_config(a + ",cpu").ranking.sl_alpha == 0 for a in ls.ARMS if a != "hstu_sl")
  assert (m["ultra"].local_window, m["ultra"].global_window, m["ultra"].sla_block, m["ultra"].full_layers,
          m["ultra"].truncated_len, m["ultra"].stream_select) == (256, 32, 128, 1, 512, (0,))
  assert m["ultra_k1_0"].local_window == 0 and m["ultra_k2_0"].global_window == 0
  assert m["ultra_no_trunc"].truncated_len == 0 and len(m["ultra_mot"].stream_select) == 2
  assert m["ultra_mot_budget"].stream_len == (3072, 1024) and not m["ultra_mot"].get("stream_len")
  assert {k: v for k, v in m["ultra_mot_budget"].items() if k != "stream_len"} == m["ultra_mot"].to_dict()
  assert m["ultra_newest1k"].stream_len == (1024,)   # a budget that binds, one stream; the mixture splits it 3:1
  assert {k: v for k, v in m["ultra_newest1k"].items() if k != "stream_len"} == m["ultra"].to_dict()
  assert m["ultra_mot_newest1k"].stream_len == (768, 256)
  assert {k: v for k, v in m["ultra_mot_newest1k"].items() if k != "stream_len"} == m["ultra_mot"].to_dict()
  inter = m["ultra_interleaved"]   # two tokens per event; every token count doubled, nothing else changed
  assert (inter.token_layout, inter.local_window, inter.global_window, inter.truncated_len, inter.attn_norm_len) == (
      "interleaved", 512, 64, 1024, 2 * 4096 + 16)
  assert {k: v for k, v in inter.items() if k not in ("token_layout", "local_window", "global_window", "truncated_len",
                                                      "attn_norm_len")} == {
      k: v for k, v in m["ultra"].items() if k not in ("token_layout", "local_window", "global_window", "truncated_len",
                                                       "attn_norm_len")}
  for f in (2, 4, 8):   # GACT folds the whole history; truncation keeps the newest H / f: same token budget
    g, t = ls.get_config(f"gact_f{f},cpu"), ls.get_config(f"trunc_f{f},cpu")
    assert (g.model.sla, g.model.history_fold, g.ranking.history_len) == (False, f, 4096)
    assert (t.model.sla, t.model.history_fold, t.ranking.history_len) == (False, 1, 4096 // f)
    assert g.model.attn_norm_len == t.model.attn_norm_len
    assert g.model.fold_align == "oldest"
  newest = ls.get_config("gact_newest_f4,cpu").model   # gact_f4 with the folds ending at the newest event
  assert newest.fold_align == "newest" and {k: v for k, v in newest.items() if k != "fold_align"} == {
      k: v for k, v in m["gact_f4"].items() if k != "fold_align"}
  w = ls.get_config("ultra,cpu,w32")   # another width: the scaling fit's points, all else equal
  assert (w.model.dim, w.model.dqk, w.model.dv, w.study.width) == (32, 16, 16, 32) and w.name.endswith("_w32")
  assert ls.get_config("ultra,cpu").study.width == ls.DEFAULT_WIDTH == 64
  assert {k: v for k, v in w.model.items() if k not in ("dim", "dqk", "dv")} == {
      k: v for k, v in m["ultra"].items() if k not in ("dim", "dqk", "dv")}
  e = ls.get_config("hstu_full,cpu,e12")   # a longer budget: only the epochs and the name differ
  assert (e.train.num_epochs, e.study.epochs, e.name) == (12, 12, "long_sequences_cpu_hstu_full_e12")
  assert ref.train.num_epochs == ref.study.epochs == ls.DEFAULT_EPOCHS
  assert {k: v for k, v in e.train.items() if k != "num_epochs"} == {
      k: v for k, v in ref.train.items() if k != "num_epochs"} and e.model == ref.model
  for bad in ("", "cpu", "ultra,gpu", "ultra,cpu,cpu", "ultra,cpu,cpu_multi", "bogus,cpu", "ultra,w33", "ultra,w32,w64", "ultra,wide",
              "ultra,e0", "ultra,e4,e8", "ultra,eight"):
    with pytest.raises(ValueError, match="long_sequences"):
      ls.get_config(bad)


def _run_quick(arm: str, tmp_path) -> dict:
  """`experiments.run` on the arm at quick, trimmed: one history width, 2 steps, no FLOP count."""
  out = tmp_path / f"{arm}.json"
  cmd = [sys.executable, "-m", "experiments.run", f"--config=configs/long_sequences.py:{arm},cpu,quick",
         f"--workdir={tmp_path / arm}", f"--results={out}", "--config.ranking.bucket_min=1024",
         "--config.train.max_steps=2", "--config.train.count_flops=False", "--config.eval.batch_size=64"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  return json.loads(out.read_text())


def test_experiments_run_accepts_an_arm_at_quick(tmp_path):
  r = _run_quick("gact_f8", tmp_path)
  assert r["config_values"]["study"] == {"name": "long_sequences", "arm": "gact_f8", "preset": "cpu", "width": 64,
                                        "epochs": 4}
  assert r["steps"] == 2 and r["dataset"] == "long_sequences"
  assert r["metrics"]["test"]["planted"]["candidates"] > 0 and "ne" in r["metrics"]["test"]["planted"]["mean"]


@pytest.mark.slow   # ~1-2 min per arm on the loaded 2-core box
@pytest.mark.parametrize("arm", ["hstu_full", "hstu_newest256", "ultra", "ultra_mot", "ultra_mot_budget", "ultra_interleaved",
                                 "ultra_newest1k", "ultra_mot_newest1k",
                                 "gact_f4", "trunc_f4"])
def test_experiments_run_accepts_each_arm_at_quick(arm, tmp_path):
  r = _run_quick(arm, tmp_path)
  assert r["config_values"]["study"]["arm"] == arm and r["steps"] == 2
  assert r["metrics"]["test"]["planted"]["candidates"] > 0


def test_inference_flops_count_the_evaluators_batches(tmp_path):
  """RankingTask.inference_flops on the quick world: the kernel model is counted as its XLA twin (an
  exact count), the newest-256 cut and GACT's fold cost less than the whole history, and the per-request
  figure is one evaluation batch's forward FLOPs over its rows (every test request has one width here)."""
  from recjax.scaling import flops as flops_lib  # pylint: disable=import-outside-toplevel
  from recjax.tasks.ranking import RankingTask, make_batch  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  counts = {}
  for arm in ("hstu_full", "hstu_newest256", "gact_f4"):
    task = RankingTask(ls.get_config(f"{arm},cpu,quick"), str(tmp_path / arm))
    model = task.build_model()[0]
    counts[arm] = task.inference_flops(model)
    assert counts[arm]["exact"] and counts[arm]["requests"] == len(task.examples["test"]) > 0
  full = counts["hstu_full"]
  assert counts["hstu_newest256"]["flops_per_example"] < 0.5 * full["flops_per_example"]
  assert counts["gact_f4"]["flops_per_example"] < 0.5 * full["flops_per_example"]
  task = RankingTask(ls.get_config("hstu_full,cpu,quick"), str(tmp_path / "hstu_full"))
  model = task.build_model()[0]
  assert model.attention_impl == "auto"
  assert task.inference_flops(model.clone(attention_impl="xla")) == full
  ex, bs = task.examples["test"], task.config.eval.batch_size
  assert list(full["requests_by_width"]) == [str(task.config.ranking.history_len)]
  batch = make_batch(ex, np.arange(min(bs, len(ex))), bs)
  xla = model.clone(attention_impl="xla")
  params = jax.eval_shape(lambda k, b: xla.init({"params": k, "dropout": k}, b, train=False)["params"],
                          jax.random.key(0), batch)
  one = flops_lib.forward_flops(lambda b, p: xla.apply({"params": p}, b, train=False)["logits"], batch, params,
                                examples=bs)
  assert full["flops_per_example"] == pytest.approx(one.total / bs, rel=1e-9)


@pytest.mark.parametrize("train_k", [0, 40])
def test_split_signal_counts_what_the_task_scores(train_k, tmp_path):
  """synthetic_signal.split_signal places the planted return-phase events in the splits exactly as the
  ranking task does (its `planted` masks and real candidates), with and without a train_k cut; the
  script built on it rejects a field the world does not have."""
  from recjax.data import synthetic as sy  # pylint: disable=import-outside-toplevel
  from recjax.data import synthetic_signal  # pylint: disable=import-outside-toplevel
  from recjax.tasks.ranking import RankingTask  # pylint: disable=import-outside-toplevel
  c = ls.get_config("hstu_full,cpu,quick")
  c.ranking.train_k = train_k
  task = RankingTask(c, str(tmp_path))
  r = c.ranking
  got = synthetic_signal.split_signal(sy.build_world(sy.WorldConfig(**c.data.world.to_dict())), test_k=r.test_k,
                                      valid_k=r.valid_k, train_k=train_k, min_history=r.min_history)
  for split in ("train", "valid", "test"):
    real = task.examples[split].arrays["cand_event"] >= 0
    assert got[split]["candidates"] == int(real.sum())
    assert got[split]["planted_return"] == int(task.planted[split].sum())
    assert got[split]["planted_return"] <= got[split]["dormant_topic"] <= got[split]["candidates"]
  assert got["test"]["planted_return"] > 0 and got["test"]["ne"]["oracle"] <= got["test"]["ne"]["full_history"]
  assert got["test"]["dormant_topic"] > got["test"]["planted_return"]   # random items land on dormant topics too
  sys.path.insert(0, os.path.join(REPO, "scripts"))
  try:
    import long_world_split_signal as script  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  assert script.parse_variant("dormant_return_from=0.6,num_users=8") == {"dormant_return_from": 0.6, "num_users": 8}
  with pytest.raises(ValueError, match="dormant_return_form"):
    script.parse_variant("dormant_return_form=0.6")
  with pytest.raises(ValueError, match="dormant_return_from needs a number"):
    script.parse_variant("dormant_return_from=late")
