"""Runs the PyTorch reference encoders (meta-recsys/generative-recommenders, "research" code) on
cases written by `test_reference_parity.py`, inside the reference's own venv (torch + fbgemm).

    cd <reference source dir> && <reference venv>/bin/python peer_reference_forward.py CASE_DIR

This file imports torch and the reference package, never recjax or JAX; the reference code is
imported from its source dir, not copied. For every `CASE_DIR/<name>.in.npz` it writes
`CASE_DIR/<name>.out.npz`. An input holds `spec` (a JSON string), `ids` [B, N], `lengths` [B],
optionally `timestamps` [B, N] (the target's time at column `lengths`, as the reference's
`movielens_seq_features_from_row` lays it out), and `param/<state_dict key>` arrays already in the
reference's names and layouts: the weight mapping lives on the test's side, so this script only
builds the reference module, loads those weights strictly (every parameter must be given) and
runs it in eval mode (no dropout).

Spec kinds:
  hstu          the reference `HSTU` encoder; spec "bias": "position_time" (as the trainer builds it),
                "position" (each layer's bias module swapped for the reference's own
                `RelativePositionalBias`), "none" (no timestamps given: the reference's blocks add
                their bias only when there are timestamps; `enable_relative_attention_bias=False`
                itself fails the reference's `assert self._rel_attn_bias is not None`)
  sasrec        the reference `SASRec` encoder
  time_buckets  the reference `RelativeBucketedTimeAndPositionBasedBias.forward` with the position
                table zeroed and the time table set to 0, 1, ..., 128, so its output is the time
                bucket of every (i, j) pair: [B, N, N]
Outputs: `raw` [B, N, D] (the encoder before its output post-processor), `l2` [B, N, D] (the
reference's `L2NormEmbeddingPostprocessor` of `raw`), `current` [B, D] (the reference's
`get_current_embeddings` of `l2`: the query embedding its evaluation uses); or `buckets` [B, N, N].
"""
import json
import os
import sys

import fbgemm_gpu  # noqa: F401  (registers the torch.ops.fbgemm jagged ops the reference calls)
import numpy as np
import torch

from generative_recommenders.research.modeling.sequential.embedding_modules import LocalEmbeddingModule
from generative_recommenders.research.modeling.sequential.hstu import HSTU, RelativePositionalBias
from generative_recommenders.research.modeling.sequential.input_features_preprocessors import (
    LearnablePositionalEmbeddingInputFeaturesPreprocessor)
from generative_recommenders.research.modeling.sequential.output_postprocessors import (
    L2NormEmbeddingPostprocessor, OutputPostprocessorModule)
from generative_recommenders.research.modeling.sequential.sasrec import SASRec
from generative_recommenders.research.modeling.sequential.utils import get_current_embeddings
from generative_recommenders.research.rails.similarities.dot_product_similarity_fn import DotProductSimilarity


class _Identity(OutputPostprocessorModule):
  """Leaves the encoder output as it is, so that the raw outputs can be compared."""

  def debug_str(self):
    return "id"

  def forward(self, output_embeddings):
    return output_embeddings


def _common(spec):
  n = spec["max_sequence_len"] + spec["max_output_len"]
  # LocalEmbeddingModule holds num_items + 1 rows (row 0 = padding), as the trainer builds it.
  emb = LocalEmbeddingModule(num_items=spec["num_rows"] - 1, item_embedding_dim=spec["dim"])
  pre = LearnablePositionalEmbeddingInputFeaturesPreprocessor(max_sequence_len=n, embedding_dim=spec["dim"],
                                                              dropout_rate=0.2)
  return dict(embedding_module=emb, similarity_module=DotProductSimilarity(),
              input_features_preproc_module=pre, output_postproc_module=_Identity(),
              max_sequence_len=spec["max_sequence_len"], max_output_len=spec["max_output_len"],
              embedding_dim=spec["dim"], num_blocks=spec["num_blocks"], num_heads=spec["num_heads"])


def build(spec):
  if spec["kind"] == "sasrec":
    return SASRec(ffn_hidden_dim=spec["ffn_dim"], ffn_activation_fn="relu", ffn_dropout_rate=0.2,
                  **_common(spec))
  if spec["kind"] in ("hstu", "time_buckets"):
    bias = spec.get("bias", "position_time")
    if bias not in ("none", "position", "position_time"):
      raise ValueError(f"unknown bias {bias!r}")
    model = HSTU(linear_dim=spec["dv"], attention_dim=spec["dqk"], normalization="rel_bias",
                 linear_config="uvqk", linear_activation="silu", linear_dropout_rate=0.2,
                 attn_dropout_rate=0.0, verbose=False,
                 **_common(spec))
    if bias == "position":
      n = spec["max_sequence_len"] + spec["max_output_len"]
      for layer in model._hstu._attention_layers:  # pylint: disable=protected-access
        layer._rel_attn_bias = RelativePositionalBias(n)  # pylint: disable=protected-access
    return model
  raise ValueError(f"unknown kind {spec['kind']!r}")


def load_strict(model, params):
  """Loads every parameter from `params` (buffers such as the causal mask stay the model's own)."""
  names = {k for k, _ in model.named_parameters()}
  if set(params) != names:
    raise ValueError(f"parameter names differ from the reference's: missing {sorted(names - set(params))}, "
                     f"unknown {sorted(set(params) - names)}")
  state = model.state_dict()
  for k, v in params.items():
    if tuple(state[k].shape) != v.shape:
      raise ValueError(f"{k}: reference shape {tuple(state[k].shape)}, given {v.shape}")
  model.load_state_dict({**state, **{k: torch.from_numpy(v) for k, v in params.items()}}, strict=True)


def run_case(path_in, path_out):
  data = np.load(path_in)
  spec = json.loads(str(data["spec"]))
  model = build(spec).eval()
  if spec["kind"] == "time_buckets":
    rab = model._hstu._attention_layers[0]._rel_attn_bias  # pylint: disable=protected-access
    with torch.no_grad():
      rab._pos_w.zero_()  # pylint: disable=protected-access
      rab._ts_w.copy_(torch.arange(rab._ts_w.numel(), dtype=torch.float32))  # pylint: disable=protected-access
      buckets = rab(torch.from_numpy(data["timestamps"]))
    np.savez(path_out, buckets=buckets.numpy())
    return
  load_strict(model, {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")})
  ids = torch.from_numpy(data["ids"])
  lengths = torch.from_numpy(data["lengths"])
  payloads = {}
  if spec["kind"] == "hstu" and spec["bias"] != "none":
    # RelativePositionalBias ignores the times, but the block adds a bias only when they are given.
    payloads["timestamps"] = torch.from_numpy(data["timestamps"] if "timestamps" in data.files
                                              else np.zeros_like(data["ids"]))
  with torch.no_grad():
    raw = model(past_lengths=lengths, past_ids=ids, past_embeddings=model.get_item_embeddings(ids),
                past_payloads=payloads)
    l2 = L2NormEmbeddingPostprocessor(spec["dim"], eps=1e-6)(raw)
    current = get_current_embeddings(lengths=lengths, encoded_embeddings=l2)
  np.savez(path_out, raw=raw.numpy(), l2=l2.numpy(), current=current.numpy())


def main(case_dir):
  torch.manual_seed(0)   # only the (overwritten) init draws random numbers
  names = sorted(f[:-len(".in.npz")] for f in os.listdir(case_dir) if f.endswith(".in.npz"))
  if not names:
    raise SystemExit(f"no *.in.npz cases in {case_dir}")
  for name in names:
    run_case(os.path.join(case_dir, name + ".in.npz"), os.path.join(case_dir, name + ".out.npz"))
  print(f"reference: {len(names)} case(s), torch {torch.__version__}")


if __name__ == "__main__":
  if len(sys.argv) != 2:
    raise SystemExit(__doc__)
  main(sys.argv[1])
