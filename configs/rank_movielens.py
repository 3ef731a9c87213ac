"""What the MovieLens ranking configs share ({hstu,dlrm,din}_rank_{ml100k,ml1m_half}.py, and
{kunlun,interformer_lite,wukong,dcnv2}_rank_ml100k.py).

Protocol: the synthetic ranking protocol (configs/hstu_rank_synthetic.py) on MovieLens explicit
ratings. Per user, time-ordered; the last 8 ratings are test candidates, the 8 before them
validation, the rest training; requests of 8 consecutive ratings share the <= 64 ratings before
them as history (at least 8). Tasks "rating": rating >= 4 and rating = 5 (binary labels of the
candidate's own rating, never an input). History tokens carry the item, its genres and year and the
history's own rating labels (action bits); candidates the item, genres and year; context: gender,
age, occupation (and zip prefix where the reader gives one). Loss: multi-task BCE, both weights 1.
Selection: the epoch with the lowest mean validation NE (early stopping); `metrics.test` is the test
split at that epoch. No published number uses this protocol: these are our own baselines.
"""
import ml_collections

from configs import (base, dcnv2_rank_synthetic, hstu_rank_synthetic, interformer_lite_rank_synthetic,
                     kunlun_rank_synthetic, wukong_rank_synthetic)

DATASETS = {
    # name -> (data settings, dataset_label)
    "ml100k": (dict(kind="movielens", name="ml-100k", data_dir="../shared/data/ml-100k",
                    with_timestamps=True), "ml-100k"),
    # users 1-2999 of ML-1M: the half of the shared copy with ratings and timestamps (PROVENANCE.md)
    "ml1m_half": (dict(kind="movielens", name="ml-1m", data_dir="../shared/data/ml-1m",
                       with_timestamps=True), "ml-1m-users1-2999"),
}

MODELS = {
    "hstu": dict(name="hstu_ranker", dim=64, num_blocks=2, num_heads=2, dqk=32, dv=32, max_history=64,
                 attn_norm_len=72, dropout=0.3, use_time_bias=True, num_time_buckets=129, backend="xla"),
    "dlrm": dict(name="dlrm", dim=64, mlp_dims=(256, 128), dropout=0.3),
    "din": dict(name="din", dim=64, attention_dims=(64, 32), mlp_dims=(256, 128), dropout=0.3),
}


def _rating_events(model: dict) -> dict:
  """A Kunlun-family model of the synthetic configs with MovieLens's event types: every rated movie,
  the liked ones (action bit 0: rating >= 4) and the loved ones (bit 1: rating = 5), in place of
  KuaiRand's all / click (bit 0) / long view (bit 6). Everything else as on the synthetic world."""
  return dict(model, events=("all", "liked", "loved"), event_bits=(-1, 0, 1))


# Kunlun (issue 20) and its baselines: the synthetic configs' models, so the two datasets' rows are
# the same architectures (configs/{kunlun,interformer_lite,wukong,dcnv2}_rank_synthetic.py).
MODELS.update({
    "kunlun": _rating_events(kunlun_rank_synthetic.get_config().model.to_dict()),
    "interformer_lite": _rating_events(interformer_lite_rank_synthetic.get_config().model.to_dict()),
    "wukong": wukong_rank_synthetic.get_config().model.to_dict(),
    "dcnv2": dcnv2_rank_synthetic.get_config().model.to_dict(),
})


def ranking_config(model: str, dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`model` (a key of MODELS) on `dataset` ("ml100k", "ml1m_half"); arg "quick" = smoke test."""
  if model not in MODELS or dataset not in DATASETS:
    raise ValueError(f"unknown model {model!r} or dataset {dataset!r}: models {tuple(MODELS)}, "
                     f"datasets {tuple(DATASETS)}")
  parts = [p for p in (arg or "").split(",") if p]
  ablations = [p for p in parts if model == "kunlun" and p in kunlun_rank_synthetic.ABLATIONS]
  if [p for p in parts if p != "quick" and p not in ablations] or len(ablations) > 1:
    raise ValueError(f"config argument must be empty or 'quick' (kunlun: or one of "
                     f"{sorted(kunlun_rank_synthetic.ABLATIONS)}, optionally ',quick'), got {arg!r}")
  data, label = DATASETS[dataset]
  c = hstu_rank_synthetic.ranking_base(f"{model}_rank_{dataset}" + "".join(f"_{a}" for a in ablations))
  c.dataset_label = label
  c.data.update(data)
  c.ranking.update(dict(tasks="rating", context=True))
  c.train.num_epochs = 6
  c.model = ml_collections.ConfigDict(MODELS[model])
  for a in ablations:   # Kunlun's ablation rows (issue 20), the synthetic config's, one component each
    c.model.update(kunlun_rank_synthetic.ABLATIONS[a])
  if "quick" in parts:
    apply_quick(c)
  return c


def apply_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A few steps with short histories: the MovieLens ranking path end to end in seconds."""
  base.apply_quick(c)
  c.ranking.update(dict(history_len=16, request_size=4, test_k=4, valid_k=4, min_history=4))
  c.train.batch_size = 64
  c.train.max_steps = 12
  c.train.num_epochs = 2
  c.train.eval_every_epochs = 1
  c.train.log_every_steps = 4
  c.eval.batch_size = 256
  if "max_history" in c.model:
    c.model.max_history = 16
    c.model.attn_norm_len = 20
  return c
