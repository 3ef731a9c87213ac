"""The semantic-ID study (issue 17): collisions against codebook size, item-table size against quality
and cold start, and the generative retriever beside the dense ones, as tables, JSON and PNG plots.

    python -m experiments.semantic_ids [--out_dir=results/semantic_ids] [--sweep_datasets=ml-1m,ml-100k]
        [--sweep_tokenizers=rq_kmeans,rq_vae] [--sweep_sizes=16,32,64,128,256]

Three parts, each written to `--out_dir`:
  collision_sweep.{json,png}  per dataset and tokenizer, the catalogue's collision rate (share of
      items whose full SID another item shares), distinct SIDs, largest group and per-level
      perplexity, against codebook size K (L = 3 levels, before any repair). Computed here: the
      same item vectors and tokenizers as the runs (`semantic_ids/catalogue_sids.py`, the settings
      of configs/sid_hstu_ml1m.py: content route, TF-IDF of titles + genres, SVD to 64), on every
      catalogue item of the dataset. Seconds for RQ-KMeans; RQ-VAE trains 3,000 steps per point.
  item_tables.{json,png}      every SID-vs-ID retrieval run in results/*/sid_*.json
      (configs/sid_hstu_*.py): table rows against test NDCG@10 (all, warm) and cold-item HR@10, one
      point per run, grouped by config (mean ± std over seeds).
  generative.json             the Amazon Sports rows (results/amazon-sports/) and the ML-1M rows of
      TIGER, HSTU and SASRec (results/ml-1m/, one split and evaluation): Recall/NDCG@5/10 per model
      and protocol, and for the generative retriever the collision-aware (item-level) numbers beside
      the SID-level ones.
Nothing here trains a retrieval model: scripts/reproduce_semantic_ids.sh runs them, then this.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import re
import sys
import time

from absl import app, flags, logging
import numpy as np

_OUT = flags.DEFINE_string("out_dir", "results/semantic_ids", "where the tables and plots go")
_RESULTS = flags.DEFINE_string("results_root", "results", "the folder of results files to gather")
_DATASETS = flags.DEFINE_list("sweep_datasets", ["ml-1m", "ml-100k"], "collision sweep datasets ([] = skip)")
_TOKENIZERS = flags.DEFINE_list("sweep_tokenizers", ["rq_kmeans", "rq_vae"], "collision sweep tokenizers")
_SIZES = flags.DEFINE_list("sweep_sizes", ["16", "32", "64", "128", "256"], "codebook sizes K of the sweep")

_SEED_SUFFIX = re.compile(r"_seed\d+$")


# -- part 1: collisions against codebook size ----------------------------------------------------

def sweep_vectors(x_ND: np.ndarray, sizes, tokenizers, base_settings) -> list[dict]:
  """One row per (tokenizer, K): the codes' collision report and per-level usage, before repair."""
  from recjax.semantic_ids import catalogue_sids, codes  # pylint: disable=import-outside-toplevel
  from recjax.semantic_ids import collisions  # pylint: disable=import-outside-toplevel
  rows = []
  for tok in tokenizers:
    for k in sizes:
      s = dataclasses.replace(base_settings, tokenizer=tok, codebook_size=int(k), dedup="none")
      t0 = time.time()
      codes_NL, _ = catalogue_sids.tokenize(x_ND, s)
      rep = collisions.collision_report(codes_NL)
      usage = codes.codebook_usage(codes_NL, int(k))
      rows.append({"tokenizer": tok, "codebook_size": int(k), "levels": s.num_levels,
                   "collision_rate": rep["collision_rate"], "distinct_sids": rep["distinct_sids"],
                   "max_group_size": rep["max_group_size"], "min_moves_to_repair": rep["min_moves_to_repair"],
                   "perplexity": [u.perplexity for u in usage], "utilisation": [u.utilisation for u in usage],
                   "fit_s": time.time() - t0})
      print(f"  {tok:9s} K={k:4d}: collision rate {rep['collision_rate']:.3f}, "
            f"{rep['distinct_sids']} distinct SIDs, largest group {rep['max_group_size']}", flush=True)
  return rows


def identical_vector_share(x_ND: np.ndarray, decimals: int = 5) -> float:
  """Share of items whose vector equals another item's (to `decimals`): no tokenizer can separate
  them, so the collision rate cannot fall below it at any codebook size."""
  _, inverse, counts = np.unique(np.round(x_ND, decimals), axis=0, return_inverse=True, return_counts=True)
  return float(np.mean(counts[inverse.ravel()] > 1))


def merge_sweep(sweep: dict, dataset: str, meta: dict, rows: list[dict]) -> dict:
  """Adds `rows` to `sweep[dataset]` (in place), replacing the points with the same (tokenizer, K)."""
  new_keys = {(r["tokenizer"], r["codebook_size"]) for r in rows}
  kept = [r for r in sweep.get(dataset, {}).get("rows", []) if (r["tokenizer"], r["codebook_size"]) not in new_keys]
  sweep[dataset] = {**meta, "rows": sorted(kept + rows, key=lambda r: (r["tokenizer"], r["codebook_size"]))}
  return sweep


def catalogue_vectors(dataset: str):
  """(settings, item vectors [N, D]) of every catalogue item of `dataset`, as configs/sid_hstu_*.py
  build them (content route; vectors L2-normalised or not as the config says)."""
  from configs import sid_hstu_ml100k, sid_hstu_ml1m  # pylint: disable=import-outside-toplevel
  from recjax.data import movielens, registry  # pylint: disable=import-outside-toplevel
  from recjax.semantic_ids import catalogue_sids  # pylint: disable=import-outside-toplevel
  modules = {"ml-1m": sid_hstu_ml1m, "ml-100k": sid_hstu_ml100k}
  if dataset not in modules:
    raise ValueError(f"--sweep_datasets: {dataset!r} has no content route here; known: {sorted(modules)}")
  config = modules[dataset].get_config("sid,warm")
  s = catalogue_sids.SIDSettings.from_config(config.sid)
  seqs = registry.load_dataset(config.data)
  catalogue = np.asarray(seqs.catalogue(), np.int64)
  content = movielens.item_content(config.data.name, registry.resolve_path(config.data.data_dir), catalogue)
  x = catalogue_sids.item_vectors_of(s, catalogue, seqs, content)[0].vectors
  if s.normalize:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
  return s, x


def plot_sweep(sweep: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4))
  for dataset, part in sweep.items():
    for tok in sorted({r["tokenizer"] for r in part["rows"]}):
      rs = sorted((r for r in part["rows"] if r["tokenizer"] == tok), key=lambda r: r["codebook_size"])
      ax.plot([r["codebook_size"] for r in rs], [r["collision_rate"] for r in rs], marker="o",
              label=f"{dataset} ({part['items']:,} items), {tok}")
    if part.get("identical_vectors") is not None:
      ax.axhline(part["identical_vectors"], ls="--", lw=0.8, color="gray")
      ax.annotate(f"{dataset}: items with an identical vector", (16, part["identical_vectors"]), fontsize=6,
                  xytext=(0, 2), textcoords="offset points")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("codes per level K (3 levels)")
  ax.set_ylabel("collision rate (share of items sharing their SID)")
  ax.set_title("SID collisions against codebook size (content route)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# -- part 2: item-table size against quality and cold start --------------------------------------

def table_label(r: dict) -> str:
  """`ID`, or a SID table's recipe from its results file: route, levels x codes, collision handling,
  hashed residual rows (the one label of the study's files, plots and the README table)."""
  rep, mc = r["item_representation"], r.get("model_config", {})
  if rep.get("kind") != "sid":
    return "ID"
  st = rep.get("sid", {}).get("settings", {})
  label = f"SID {rep['sid'].get('route', '?')} {st.get('num_levels', '?')} x {st.get('codebook_size', '?')}"
  if st.get("disambiguate") or st.get("dedup") == "append_level":   # the report's older / newer field
    label += " + disambiguation"
  elif st.get("dedup") == "reassign":
    label += " + reassigned"
  if mc.get("sid_residual_size"):
    label += f" + {mc['sid_residual_size']} hashed rows"
  return label


def _mean_std(values) -> dict:
  v = np.asarray(values, float)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None, "n": int(len(v))}


def gather_item_tables(results_root: str) -> list[dict]:
  """One row per SID-vs-ID config (seeds pooled): table rows, shrink, NDCG@10 / HR@10 (test, last
  epoch), warm NDCG@10 and cold HR@10 with the cold targets' count. Partial runs are skipped."""
  groups: dict[tuple[str, str], list[dict]] = {}
  for path in sorted(glob.glob(os.path.join(results_root, "*", "sid_*.json"))):
    r = json.load(open(path))
    if r.get("partial") or r.get("config", "").endswith("_quick") or "item_representation" not in r:
      continue
    r["_path"] = path
    groups.setdefault((r["dataset"], _SEED_SUFFIX.sub("", r["config"])), []).append(r)
  rows = []
  for (dataset, config), rs in sorted(groups.items()):
    r0, tests = rs[0], [r["metrics"]["test"] for r in rs]
    dim = r0["config_values"]["model"]["dim"]
    rep = r0["item_representation"]
    row = {"dataset": dataset, "config": config, "table": table_label(r0),
           "cold_items": r0["config_values"]["data"].get("cold_items", 0.0),
           "epochs": sorted({float(r["epochs"]) for r in rs}), "seeds": [r["seed"] for r in rs],
           "files": [r["_path"] for r in rs], "rows": int(rep["params"] // dim),
           "id_rows": int(rep["id_table_params"] // dim),
           "ndcg@10": _mean_std([t["ndcg@10"] for t in tests]), "hr@10": _mean_std([t["hr@10"] for t in tests])}
    if all("warm" in t for t in tests):
      row["warm_ndcg@10"] = _mean_std([t["warm"]["ndcg@10"] for t in tests])
    if all("cold" in t for t in tests):
      row["cold_hr@10"] = _mean_std([t["cold"]["hr@10"] for t in tests])
      row["cold_targets"] = tests[0]["cold"]["queries"]
      if all("hr@200" in t["cold"] for t in tests):
        row["cold_hr@200"] = _mean_std([t["cold"]["hr@200"] for t in tests])
    if rep.get("kind") == "sid" and rep.get("shrink_vs_id_table"):
      row["shrink"] = rep["shrink_vs_id_table"]
    if rep.get("kind") == "sid":
      sid = rep.get("sid", {})   # the report's older ("collisions") or newer ("before_dedup") field
      row["collision_rate_before_dedup"] = (sid.get("before_dedup") or sid.get("collisions") or {}).get("collision_rate")
    rows.append(row)
  return rows


def verdicts(rows: list[dict]) -> list[dict]:
  """Issue 17's ML-1M bar for each SID config against the ID config of the same dataset and cold
  split: NDCG@10 within 5% of ID's, a table at least 4x smaller, and a higher cold HR@10."""
  out = []
  for r in rows:
    if r["table"] == "ID":
      continue
    ids = [i for i in rows if i["table"] == "ID" and i["dataset"] == r["dataset"] and i["cold_items"] == r["cold_items"]]
    if not ids:
      continue
    ref = ids[0]
    rel = r["ndcg@10"]["mean"] / ref["ndcg@10"]["mean"] - 1.0
    shrink = ref["rows"] / r["rows"]
    v = {"dataset": r["dataset"], "config": r["config"], "against": ref["config"], "ndcg@10_rel_to_id": rel,
         "within_5pct": bool(rel >= -0.05), "shrink": shrink, "at_least_4x_smaller": bool(shrink >= 4.0)}
    if "cold_hr@10" in r and "cold_hr@10" in ref:
      v["cold_hr@10_minus_id"] = r["cold_hr@10"]["mean"] - ref["cold_hr@10"]["mean"]
      v["cold_better"] = bool(v["cold_hr@10_minus_id"] > 0)
    v["seeds"] = (len(r["seeds"]), len(ref["seeds"]))
    out.append(v)
  return out


def plot_item_tables(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  datasets = sorted({r["dataset"] for r in rows})
  fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.6 * len(datasets)), squeeze=False)
  for (ax_q, ax_c), dataset in zip(axes, datasets):
    rs = [r for r in rows if r["dataset"] == dataset]
    for r in rs:
      m, s = r["ndcg@10"]["mean"], r["ndcg@10"]["std"] or 0.0
      marker = "s" if r["table"] == "ID" else "o"
      ax_q.errorbar([r["rows"]], [m], yerr=[s], marker=marker, capsize=3,
                    label=f"{r['table']}, {r['cold_items']:.0%} cold")
    ax_q.set_xscale("log")
    ax_q.set_xlabel("item-table rows")
    ax_q.set_ylabel("test NDCG@10 (last epoch)")
    ax_q.set_title(f"{dataset}: table size against quality")
    ax_q.grid(alpha=0.3)
    ax_q.legend(fontsize=6)
    cold = [r for r in rs if "cold_hr@10" in r]
    ax_c.barh([f"{r['table']}, {r['cold_items']:.0%} cold" for r in cold], [r["cold_hr@10"]["mean"] for r in cold],
              xerr=[r["cold_hr@10"]["std"] or 0.0 for r in cold])
    ax_c.set_xlabel("cold-item test HR@10 (items never trained)")
    ax_c.set_title(f"{dataset}: cold start")
    ax_c.tick_params(axis="y", labelsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# -- part 3: generative retrieval beside dense retrieval on Amazon Sports -------------------------

# ML-1M runs that sit on one split and evaluation (configs/hstu_ml1m.py's): TIGER, HSTU, SASRec, any seed.
ML1M_GENERATIVE_PEERS = re.compile(r"^(tiger|hstu|sasrec)_ml1m(_short)?(_seed\d+)?\.json$")
GENERATIVE_KEYS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")


def gather_generative(results_root: str) -> list[dict]:
  """The generative retriever beside the dense ones: every Amazon Sports row and the ML-1M rows of
  TIGER, HSTU and SASRec (ML1M_GENERATIVE_PEERS) -> rows of dataset, model, protocol, Recall/NDCG@5/10
  (item level; a run without a cut-off leaves it out) and, where the run reports them, the SID-level
  numbers a collision-unaware evaluation would give."""
  paths = sorted(glob.glob(os.path.join(results_root, "amazon-sports", "*.json")))
  paths += sorted(p for p in glob.glob(os.path.join(results_root, "ml-1m", "*.json"))
                  if ML1M_GENERATIVE_PEERS.match(os.path.basename(p)))
  rows = []
  for path in paths:
    r = json.load(open(path))
    if r.get("config", "").endswith("_quick"):
      continue
    t = r["metrics"]["test"]
    dataset = os.path.basename(os.path.dirname(path))
    protocol = ("history removed" if "history_removed" in r["config"] else "history kept (TIGER)"
                ) if dataset == "amazon-sports" else "history removed"   # ML-1M: HSTU's protocol removes it
    row = {"dataset": dataset, "config": r["config"], "model": r["model"], "seed": r["seed"], "file": path,
           "protocol": protocol, "partial": bool(r.get("partial")), **{k: t[k] for k in GENERATIVE_KEYS if k in t}}
    if "sid_level" in t:
      row["sid_level"] = {k: t["sid_level"][k] for k in GENERATIVE_KEYS if k in t["sid_level"]}
    rows.append(row)
  return rows


def _record(part: str, datasets, metrics: dict, t0: float, **body) -> dict:
  """A study file's provenance (the fields every results file carries) around its content."""
  from recjax.train import results  # pylint: disable=import-outside-toplevel
  return {"study": f"semantic_ids:{part}", "dataset": ",".join(sorted(datasets)) or "-",
          "model": "semantic IDs", "config": "configs/sid_hstu_*.py", "seed": 0, "metrics": metrics,
          "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.semantic_ids"] + sys.argv[1:]),
          "commit": results.git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
          "versions": results.versions(), "hardware": results.hardware(),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "wall_clock_s": time.time() - t0, **body}


def _print_table(title: str, header: list[str], lines: list[list[str]]) -> None:
  print(f"\n{title}")
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for line in lines:
    print("| " + " | ".join(line) + " |")


def _fmt(ms: dict | None) -> str:
  if not ms:
    return "–"
  return f"{ms['mean']:.4f}" + (f" ± {ms['std']:.4f}" if ms.get("std") is not None else "")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # JAX's backend probing is chatty at INFO
  out = _OUT.value
  os.makedirs(out, exist_ok=True)
  if _DATASETS.value:
    # Points accumulate across invocations: a run replaces the (dataset, tokenizer, K) points it
    # computes and keeps the others (e.g. the slow RQ-VAE points added after the RQ-KMeans ones).
    sweep_path = os.path.join(out, "collision_sweep.json")
    sweep = json.load(open(sweep_path)).get("sweep", {}) if os.path.exists(sweep_path) else {}
    t0 = time.time()
    for dataset in _DATASETS.value:
      print(f"collision sweep on {dataset}:", flush=True)
      s, x = catalogue_vectors(dataset)
      rows = sweep_vectors(x, [int(k) for k in _SIZES.value], _TOKENIZERS.value, s)
      merge_sweep(sweep, dataset, {"items": int(len(x)), "route": s.vectors, "vector_dim": int(x.shape[1]),
                                   "identical_vectors": identical_vector_share(x),
                                   "settings": dataclasses.asdict(s)}, rows)
    floor = {f"identical_vectors_{d}": part.get("identical_vectors") for d, part in sweep.items()}
    rates = {f"collision_rate_{d}_{r['tokenizer']}_k{r['codebook_size']}": r["collision_rate"]
             for d, part in sweep.items() for r in part["rows"]}
    with open(sweep_path, "w") as f:
      json.dump(_record("collision_sweep", sweep, {**rates, **floor}, t0, sweep=sweep), f, indent=1)
    plot_sweep(sweep, os.path.join(out, "collision_sweep.png"))
    sizes = sorted({r["codebook_size"] for part in sweep.values() for r in part["rows"]})
    _print_table("collision rate (before repair) against codes per level, 3 levels",
                 ["dataset", "tokenizer"] + [f"K={k}" for k in sizes],
                 [[d, tok] + [next((f"{r['collision_rate']:.3f}" for r in part["rows"]
                                    if r["tokenizer"] == tok and r["codebook_size"] == k), "–") for k in sizes]
                  for d, part in sweep.items() for tok in sorted({r["tokenizer"] for r in part["rows"]})])

  t0 = time.time()
  rows = gather_item_tables(_RESULTS.value)
  verdict = verdicts(rows)
  with open(os.path.join(out, "item_tables.json"), "w") as f:
    json.dump(_record("item_tables", {r["dataset"] for r in rows},
                      {f"ndcg@10_rel_to_id_{v['config']}": v["ndcg@10_rel_to_id"] for v in verdict}, t0,
                      rows=rows, verdicts=verdict), f, indent=1)
  if rows:
    plot_item_tables(rows, os.path.join(out, "item_tables.png"))
  _print_table("item tables (test, last epoch; mean ± std over seeds)",
               ["dataset", "cold", "table", "rows", "seeds", "NDCG@10", "warm NDCG@10", "cold HR@10"],
               [[r["dataset"], f"{r['cold_items']:.0%}", r["table"], f"{r['rows']:,}", str(len(r["seeds"])),
                 _fmt(r["ndcg@10"]), _fmt(r.get("warm_ndcg@10")), _fmt(r.get("cold_hr@10"))] for r in rows])
  for v in verdict:
    print(f"{v['dataset']} {v['config']}: NDCG@10 {v['ndcg@10_rel_to_id']:+.1%} vs ID ({'within' if v['within_5pct'] else 'outside'}"
          f" 5%), table {v['shrink']:.1f}x smaller"
          + (f", cold HR@10 {v['cold_hr@10_minus_id']:+.4f} vs ID" if "cold_hr@10_minus_id" in v else "")
          + f"; seeds {v['seeds'][0]} vs {v['seeds'][1]}")

  gen = gather_generative(_RESULTS.value)
  with open(os.path.join(out, "generative.json"), "w") as f:
    json.dump(_record("generative", {g["dataset"] for g in gen},
                      {f"ndcg@10_{g['config']}": g.get("ndcg@10") for g in gen}, t0, rows=gen), f, indent=1)
  _print_table("generative vs dense retrieval (test)",
               ["dataset", "config", "protocol", "R@5", "R@10", "N@5", "N@10", "SID-level N@10"],
               [[g["dataset"], g["config"] + (" (partial)" if g["partial"] else ""), g["protocol"]]
                + [f"{g[k]:.4f}" if k in g else "–" for k in ("hr@5", "hr@10", "ndcg@5", "ndcg@10")]
                + [f"{g['sid_level']['ndcg@10']:.4f}" if "sid_level" in g else "–"] for g in gen])
  print(f"\nwrote {out}/")


if __name__ == "__main__":
  app.run(main)
