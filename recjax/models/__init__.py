"""Models: Flax linen modules mapping a batch to (sequence outputs [B, L, D], item table [V, D])."""
from __future__ import annotations


def build_model(config, num_items: int):
  """The model named by `config.name`, sized for `num_items` embedding rows."""
  from recjax.models import hstu, sasrec  # pylint: disable=import-outside-toplevel
  registry = {"hstu": hstu.HSTU, "sasrec": sasrec.SASRec}
  config = dict(config)
  name = config.pop("name")
  if name not in registry:
    raise ValueError(f"unknown model.name {name!r}; known: {sorted(registry)}")
  cls = registry[name]
  unknown = sorted(set(config) - set(cls.__dataclass_fields__))
  if unknown:
    raise ValueError(f"unknown model config key(s) for {name}: {unknown}")
  return cls(num_items=num_items, **config)
