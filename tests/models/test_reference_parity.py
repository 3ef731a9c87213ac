"""Numerical parity of our HSTU and SASRec encoders with the PyTorch reference.

The reference is meta-recsys/generative-recommenders @ db1bf8f2 ("research" code; papers.md §3.5),
built on CPU by ../shared/tools/peer-hstu/run.sh into /tmp/peer/{src-<commit12>,venv}. Our venv has
no torch, so the reference runs in a subprocess of its own venv (`peer_reference_forward.py`
beside this file), and arrays travel as .npz files in a tmp dir: our parameters, mapped here to
the reference's names and layouts, and the same ids, ragged lengths and timestamps. Both sides
run in eval mode (no dropout). The reference is laid out as its trainer lays out a batch: padded
width N = max_len + gr_output_length + 1 and the target's timestamp at column `length`; ours has
width max_len with `next_times`, as recjax.data.splits builds them. We compare the rows the
models define (positions < length; the reference zeroes the others, ours leaves them
unspecified), the L2-normalised rows and the query the evaluation uses.

Where the reference is absent the tests skip; set it up with
    PEER_GIT_DIR=<git dir of meta-recsys/generative-recommenders> ../shared/tools/peer-hstu/run.sh
(or point RECJAX_PEER_SRC at the exported source and RECJAX_PEER_PYTHON at a python with torch
and fbgemm-gpu-cpu).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import subprocess
import zlib

import jax
import numpy as np
import pytest

from recjax import losses
from recjax.layers.relative_bias import time_buckets
from recjax.models.hstu import HSTU
from recjax.models.sasrec import SASRec

HERE = os.path.dirname(os.path.abspath(__file__))
SETUP = ("set it up once with `PEER_GIT_DIR=<git dir of meta-recsys/generative-recommenders> "
         "../shared/tools/peer-hstu/run.sh` (it exports the source to /tmp/peer/src-<commit12> and "
         "builds /tmp/peer/venv), or set RECJAX_PEER_SRC and RECJAX_PEER_PYTHON")

MAX_LEN, OUT_LEN = 12, 3       # the reference pads to N = MAX_LEN + OUT_LEN (trainer: 200 + 10 + 1)
V, D = 40, 16
LENGTHS = np.array([MAX_LEN, 1, 5, 9, MAX_LEN - 1])
RTOL = 1e-5          # max |ours - reference| / max |reference|, over the defined rows


def _peer():
  """(source dir, python) of the reference, or skip saying how to set it up.

  The default place (/tmp/peer) may be absent: skip. A path set explicitly must be right: fail."""
  src = os.environ.get("RECJAX_PEER_SRC") or next(iter(sorted(glob.glob("/tmp/peer/src-*"))), None)
  py = os.environ.get("RECJAX_PEER_PYTHON") or "/tmp/peer/venv/bin/python"
  marker = "generative_recommenders/research/modeling/sequential/hstu.py"
  for var, ok, what in (("RECJAX_PEER_SRC", src and os.path.isfile(os.path.join(src, marker)), f"source {src or '/tmp/peer/src-*'}"),
                        ("RECJAX_PEER_PYTHON", os.access(py, os.X_OK), f"python {py}")):
    if not ok:
      if os.environ.get(var):
        pytest.fail(f"{var}: reference {what} not usable (needs {marker} / an executable); {SETUP}")
      pytest.skip(f"reference {what} not found; {SETUP}")
  return src, py


@dataclasses.dataclass(frozen=True)
class Case:
  kind: str                 # "hstu" | "sasrec"
  num_heads: int
  bias: str = "none"        # HSTU: "none" | "position" | "time" | "position_time"
  dqk: int = 8
  dv: int = 12
  ffn_dim: int = 24
  tiling: bool = True       # our XLA path: tiled causal attention, or dense scores
  max_len: int = MAX_LEN
  out_len: int = OUT_LEN
  dim: int = D
  lengths: tuple = tuple(LENGTHS)


CASES = {
    "hstu_pos_time_h1": Case("hstu", 1, "position_time"),
    "hstu_pos_time_h2": Case("hstu", 2, "position_time", dqk=4, dv=6),
    "hstu_pos_time_h2_dense": Case("hstu", 2, "position_time", dqk=4, dv=6, tiling=False),
    "hstu_pos_h2": Case("hstu", 2, "position", dqk=4, dv=6),
    "hstu_time_h1": Case("hstu", 1, "time"),
    "hstu_no_bias_h1": Case("hstu", 1, "none"),
    # the ML-1M config's shapes: 200 items, N = 211, D = dqk = dv = 50
    "hstu_ml1m_shape": Case("hstu", 1, "position_time", dqk=50, dv=50, max_len=200, out_len=11, dim=50,
                            lengths=(200, 1, 37, 199)),
    "sasrec_h1": Case("sasrec", 1),
    "sasrec_h2": Case("sasrec", 2),
    "sasrec_h2_dense": Case("sasrec", 2, tiling=False),
    "sasrec_ml1m_shape": Case("sasrec", 1, ffn_dim=50, max_len=200, out_len=11, dim=50, lengths=(200, 1, 37, 199)),
}


def _model(c: Case):
  if c.kind == "sasrec":
    return SASRec(num_items=V, dim=c.dim, num_blocks=2, num_heads=c.num_heads, ffn_dim=c.ffn_dim,
                  max_len=c.max_len, dropout=0.2, attention_tiling=c.tiling)
  return HSTU(num_items=V, dim=c.dim, num_blocks=2, num_heads=c.num_heads, dqk=c.dqk, dv=c.dv,
              max_len=c.max_len, attn_norm_len=c.max_len + c.out_len, dropout=0.2,
              use_position_bias="position" in c.bias, use_time_bias="time" in c.bias,
              attention_tiling=c.tiling)


def _inputs(c: Case, rng):
  """The reference's layout: ids [B, N] and timestamps [B, N] with the target's time at `length`."""
  lengths = np.asarray(c.lengths, np.int64)
  n = c.max_len + c.out_len
  ids = rng.integers(1, V, (len(lengths), n))
  ids[np.arange(n)[None] >= lengths[:, None]] = 0
  # Unix seconds around ML-1M's (~9.6e8), gaps from ties to months, so many time buckets occur.
  gaps = np.where(rng.random((len(lengths), n)) < 0.15, 0, np.exp(rng.uniform(0, 14, (len(lengths), n))))
  ts = (956_703_932 + np.cumsum(gaps.astype(np.int64), axis=1))
  ts[np.arange(n)[None] > lengths[:, None]] = 0       # column `length` keeps the target's time
  return ids, lengths, ts


def _ours_batch(c: Case, ids, lengths, ts):
  """recjax's layout (recjax.data.splits): width max_len, `next_times[length - 1]` = target's time."""
  w = c.max_len
  valid = np.arange(w)[None] < lengths[:, None]
  batch = {"ids": ids[:, :w].astype(np.int32), "lengths": lengths.astype(np.int32)}
  if "time" in c.bias:
    batch["times"] = np.where(valid, ts[:, :w], 0).astype(np.int32)
    batch["next_times"] = np.where(valid, ts[:, 1:w + 1], 0).astype(np.int32)
  return batch


def _random_params(model, batch, rng):
  """Parameters of the model's shapes, drawn here rather than by its init (one compile less per
  case; the init has its own tests): matrices N(0, 1/fan_in), vectors and tables large enough that
  a misplaced bias, offset or bucket shows in the outputs (the init draws bias tables at 0.02)."""
  shapes = jax.eval_shape(lambda b: model.init(jax.random.key(0), b, train=False), batch)["params"]

  def draw(path, x):
    name = jax.tree_util.keystr(path)
    std = (1.0 / math.sqrt(x.shape[0]) if "kernel" in name else
           0.3 if "table" in name or "position_embedding" in name else 0.5)
    return rng.normal(0.0, std, x.shape).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _reference_params(c: Case, p, rng) -> dict:
  """Our parameter tree -> the reference's state_dict names and layouts."""
  n = c.max_len + c.out_len
  # The reference's position table has N rows; rows >= max_len meet only padding (zeroed) positions.
  pos = np.concatenate([p["position_embedding"], rng.normal(0, 1, (n - c.max_len, c.dim))]).astype(np.float32)
  out = {"_embedding_module._item_emb.weight": p["item_embedding"]["table"],
         "_input_features_preproc._pos_emb.weight": pos}
  for i in range(2):
    blk = p[f"block_{i}"]
    if c.kind == "hstu":
      pre = f"_hstu._attention_layers.{i}."
      out[pre + "_uvqk"] = blk["uvqk"]["kernel"]                 # [D, h(2dv + 2dqk)], order u, v, q, k
      out[pre + "_o.weight"] = blk["out"]["kernel"].T            # torch Linear: [out, in]
      out[pre + "_o.bias"] = blk["out"]["bias"]
      if c.bias == "position":
        out[pre + "_rel_attn_bias._w"] = blk["rab"]["pos_weights"]
      elif c.bias == "none":    # no timestamps: the reference's blocks skip these tables, any values do
        out[pre + "_rel_attn_bias._ts_w"] = rng.normal(0, 1, 129)
        out[pre + "_rel_attn_bias._pos_w"] = rng.normal(0, 1, 2 * n - 1)
      else:
        out[pre + "_rel_attn_bias._ts_w"] = blk["rab"]["ts_weights"]
        out[pre + "_rel_attn_bias._pos_w"] = (blk["rab"]["pos_weights"] if "position" in c.bias
                                              else np.zeros(2 * n - 1, np.float32))
    else:
      pre = f"attention_layers.{i}."
      # torch MultiheadAttention: one [3D, D] in_proj (rows q, k, v), applied as x @ W.T
      out[pre + "in_proj_weight"] = np.concatenate([blk[k]["kernel"].T for k in ("query", "key", "value")])
      out[pre + "in_proj_bias"] = np.concatenate([blk[k]["bias"] for k in ("query", "key", "value")])
      out[pre + "out_proj.weight"] = blk["attn_out"]["kernel"].T
      out[pre + "out_proj.bias"] = blk["attn_out"]["bias"]
      ff = f"forward_layers.{i}._conv1d."
      out[ff + "0.weight"] = blk["ffn_in"]["kernel"].T[:, :, None]   # Conv1d(kernel_size=1): [out, in, 1]
      out[ff + "0.bias"] = blk["ffn_in"]["bias"]
      out[ff + "3.weight"] = blk["ffn_out"]["kernel"].T[:, :, None]
      out[ff + "3.bias"] = blk["ffn_out"]["bias"]
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def _bucket_timestamps():
  """[R, 32] int64 times whose gaps t[j] - t[0] are 0 and every integer within ±3 of a bucket edge."""
  edges = [int(math.exp(0.301 * k)) for k in range(1, 72)]          # the 71 edges below 2^31
  gaps = sorted({e + d for e in edges for d in range(-3, 4) if 1 <= e + d < 2**31} | {0})
  gaps = gaps + [gaps[-1]] * (-len(gaps) % 31)
  rows = np.asarray(gaps, np.int64).reshape(-1, 31)
  return np.concatenate([np.zeros((len(rows), 1), np.int64), rows], axis=1)   # t[0] = 0: t[j] - t[0] = gap


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
  """Runs every case through ours and, in one subprocess, the reference: {name: (ours, ref, case)}."""
  src, py = _peer()
  tmp = tmp_path_factory.mktemp("reference_parity")
  ours = {}
  for name, c in CASES.items():
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    ids, lengths, ts = _inputs(c, rng)
    batch = _ours_batch(c, ids, lengths, ts)
    model = _model(c)
    params = _random_params(model, batch, rng)
    out_BLD, _ = jax.jit(lambda p, b, m=model: m.apply({"params": p}, b, train=False))(params, batch)
    ours[name] = (np.asarray(out_BLD), c)
    spec = {"kind": c.kind, "num_rows": V, "dim": c.dim, "num_blocks": 2, "num_heads": c.num_heads,
            "dqk": c.dqk, "dv": c.dv, "ffn_dim": c.ffn_dim, "max_sequence_len": c.max_len,
            "max_output_len": c.out_len, "bias": "position_time" if c.bias == "time" else c.bias}
    arrays = {"spec": np.asarray(json.dumps(spec)), "ids": ids, "lengths": lengths}
    if "time" in c.bias:
      arrays["timestamps"] = ts
    arrays.update({f"param/{k}": v for k, v in _reference_params(c, params, rng).items()})
    np.savez(tmp / f"{name}.in.npz", **arrays)
  spec = {"kind": "time_buckets", "num_rows": V, "dim": D, "num_blocks": 1, "num_heads": 1, "dqk": 4,
          "dv": 4, "max_sequence_len": 31, "max_output_len": 1}
  np.savez(tmp / "time_buckets.in.npz", spec=np.asarray(json.dumps(spec)), timestamps=_bucket_timestamps())

  env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
  r = subprocess.run([py, os.path.join(HERE, "peer_reference_forward.py"), str(tmp)], cwd=src, env=env,
                     capture_output=True, text=True, timeout=600, check=False)
  if r.returncode != 0:
    pytest.fail(f"the reference run failed (rc={r.returncode}; {src}, {py}):\n{r.stderr[-4000:]}")
  ref = {name: dict(np.load(tmp / f"{name}.out.npz")) for name in [*CASES, "time_buckets"]}
  return ours, ref


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoder_matches_reference(parity, name):
  ours, ref = parity
  out_BLD, c = ours[name]
  r = ref[name]
  lengths = np.asarray(c.lengths)
  valid = np.arange(c.max_len)[None] < lengths[:, None]
  mine, theirs = out_BLD[valid], r["raw"][:, :c.max_len][valid]
  scale = np.abs(theirs).max()
  err = np.abs(mine - theirs).max() / scale
  print(f"{name}: max |ours - reference| / max |reference| = {err:.2e} (scale {scale:.3g})")
  assert err < RTOL, f"{name}: relative error {err:.2e}"
  # the reference's rows past each length are zero (jagged); ours are unspecified and unused
  assert not np.any(r["raw"][:, :c.max_len][~valid])
  # what the losses and the evaluation read: L2-normalised rows, and the query at length - 1
  np.testing.assert_allclose(np.asarray(losses.l2_normalize(out_BLD))[valid], r["l2"][:, :c.max_len][valid],
                             atol=10 * RTOL, rtol=0)
  np.testing.assert_allclose(np.asarray(losses.l2_normalize(out_BLD[np.arange(len(lengths)), lengths - 1])),
                             r["current"], atol=10 * RTOL, rtol=0)


def test_time_buckets_match_reference(parity):
  """Every pair (i, j) of the reference's bucketing, bucket(t[i+1] - t[j]), at each bucket edge."""
  _, ref = parity
  t = _bucket_timestamps()
  ext = np.concatenate([t, t[:, -1:]], axis=1)       # the reference repeats the last time for row N - 1
  mine = np.asarray(time_buckets(ext[:, 1:].astype(np.int32), ext[:, :-1].astype(np.int32), 129))
  theirs = ref["time_buckets"]["buckets"]
  assert theirs.shape == mine.shape
  assert len(np.unique(theirs)) > 60               # the edges really span the buckets
  bad = np.argwhere(mine != theirs)
  assert len(bad) == 0, (f"{len(bad)} of {mine.size} buckets differ, e.g. gap "
                         f"{[int(ext[b, i + 1] - ext[b, j]) for b, i, j in bad[:5]]}: ours "
                         f"{[int(mine[tuple(x)]) for x in bad[:5]]}, reference {[int(theirs[tuple(x)]) for x in bad[:5]]}")
