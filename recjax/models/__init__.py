"""Models: Flax linen modules mapping a batch to outputs: retrieval models to (sequence outputs
[B, L, D], item table [V, D]), rankers to per-candidate task logits."""
from __future__ import annotations


def model_class(name: str):
  """The model class registered as `name` (a new model is a file in models/ plus a line here).

  A class may define `resolve_config(model_cfg: dict, seqs) -> (model_cfg, notes)`: how it fills
  data-dependent settings from the dataset (e.g. HSTU's time bias); the trainer calls it without
  knowing which model it has."""
  from recjax.models import (  # pylint: disable=import-outside-toplevel
      dcnv2, din, dlrm, hstu, hstu_ranker, kunlun_ranker, linear_hstu, sasrec, tiger, ultra_hstu, wukong)
  registry = {"hstu": hstu.HSTU, "sasrec": sasrec.SASRec, "linear_hstu": linear_hstu.LinearHSTU,
              # rankers: ranking batch -> {"logits": [N, C, T], "watch_ratio"} (the ranking task)
              "hstu_ranker": hstu_ranker.HSTURanker, "dlrm": dlrm.DLRM, "din": din.DIN,
              "ultra_hstu": ultra_hstu.UltraHSTU,
              "kunlun": kunlun_ranker.KunlunRanker, "dcnv2": dcnv2.DCNv2, "wukong": wukong.Wukong,
              # generative: SID batch -> logits [B, L, K] (the generative task fills its SID sizes)
              "tiger": tiger.TIGER}
  if name not in registry:
    raise ValueError(f"unknown model.name {name!r}; known: {sorted(registry)}")
  return registry[name]


def build_model(config, num_items: int):
  """The model named by `config.name`, sized for `num_items` embedding rows (models without an
  item table, e.g. TIGER over SID tokens, take no `num_items`)."""
  config = dict(config)
  name = config.pop("name")
  cls = model_class(name)
  unknown = sorted(set(config) - set(cls.__dataclass_fields__))
  if unknown:
    raise ValueError(f"unknown model config key(s) for {name}: {unknown}")
  if "num_items" in cls.__dataclass_fields__:
    config["num_items"] = num_items
  return cls(**config)


def init_params(model, key, batch) -> dict:
  """The model's parameter pytree for `key` (used for both params and dropout streams).

  Jitted: eager `model.init` dispatches (and compiles) every op of the forward pass one by one,
  ≈ 10 s for a small HSTU on 2 CPU cores; one compiled program takes a fraction of that."""
  import jax  # pylint: disable=import-outside-toplevel
  init = jax.jit(lambda k, b: model.init({"params": k, "dropout": k}, b, train=False)["params"])
  return init(key, batch)
