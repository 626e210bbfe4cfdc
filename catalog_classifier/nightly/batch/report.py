"""The night's report (report.json + report.md) and its MLflow run.

Figures are computed from predictions.parquet after the merge, so a resumed night
reports exactly what an uninterrupted one would.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ...io_utils import atomic_write_json, atomic_write_text, folder_syncs_at_end
from .commit import PREDICTIONS
from .drift import drift_block, training_reference
from .manifest import MANIFEST

log = logging.getLogger(__name__)
# every record is counted once, under exactly one of these (accepted_partial: accepted at an
# ancestor category, its refinement in the review queue)
STATUSES = ("accepted", "accepted_partial", "review", "rejected")
_DUP = re.compile(r"^duplicate item_id \(first kept at row \d+\)$")
DRIFT_COLUMNS = ["status", "model_category", "confidence", "leaf_confidence"]


def _counts(values: pd.Series) -> dict[str, int]:
    vc = values.dropna().value_counts()
    return {str(k): int(v) for k, v in sorted(vc.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def summarize(pred: pd.DataFrame, source: dict | None = None) -> dict[str, Any]:
    """Counts by status and category, review rate, mean confidence, reasons.

    ``review_rate``: share of predicted rows sent to review whole; ``partial_rate``: share accepted
    at an ancestor only (both go to the queue). Confidence is the leaf guess's probability where
    the rows carry it (``leaf_confidence``), so partial acceptance does not move it.

    ``source`` (the reader's stats: physical_lines, records) adds the ``input`` block:
    physical lines read, records parsed, rows out; rows out == records always.
    """
    status = pred["status"].astype(object)
    done = pred[status != "rejected"]
    counts = {s: int((status == s).sum()) for s in STATUSES}
    pairs = Counter((c, s) for c, s in zip(done["category"].astype(object), done["status"].astype(object))
                    if not pd.isna(c))  # rows per (category, status); a row without a category counts nowhere
    totals = Counter()
    for (c, _), n in pairs.items():
        totals[c] += n
    by_category = {str(c): {**{s: pairs.get((c, s), 0) for s in STATUSES[:-1]}, "total": totals[c]}
                   for c in sorted(totals)}
    rejected = pred.loc[status == "rejected", "reason"].astype(object)
    return {
        "rows": int(len(pred)), "counts": counts,
        **({"input": {"physical_lines": source.get("physical_lines"), "records": source.get("records"),
                      "rows_out": int(len(pred))}} if source is not None else {}),
        "review_rate": counts["review"] / len(done) if len(done) else None,
        "partial_rate": counts["accepted_partial"] / len(done) if len(done) else None,
        "mean_confidence": float(leaf_confidence(done).mean()) if len(done) else None,
        "by_category": dict(sorted(by_category.items(), key=lambda kv: -kv[1]["total"])),
        "rejections": _counts(rejected.map(lambda r: "duplicate item_id" if _DUP.match(str(r)) else r)),
        "review_reasons": _counts(pred.loc[status == "review", "reason"].astype(object)),
        "image_issues": _counts(done["image_issue"].astype(object)),
        "rules_fired": _counts(done["rule_id"].astype(object)),
    }


def find_previous(out_dir: Path) -> Path | None:
    """The latest finished sibling night whose folder name sorts before this one (OUT/DATE)."""
    here = out_dir.resolve()
    if not here.parent.is_dir():
        return None
    best = None
    for d in here.parent.iterdir():
        if d == here or not d.is_dir() or d.name >= here.name or not _is_finished(d):
            continue
        if best is None or d.name > best.name:
            best = d
    return best


def _is_finished(d: Path) -> bool:
    try:
        m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return m.get("status") == "complete" and (d / PREDICTIONS).is_file()


def leaf_confidence(rows: pd.DataFrame) -> pd.Series:
    """The leaf guess's probability: ``leaf_confidence`` where present, else ``confidence``
    (rows of a model without hierarchical routing, or older nights)."""
    conf = rows["confidence"].astype(float)
    return rows["leaf_confidence"].astype(float).fillna(conf) if "leaf_confidence" in rows else conf


def _drift_inputs(pred: pd.DataFrame) -> tuple[dict[str, int], np.ndarray]:
    done = pred[pred["status"].astype(object) != "rejected"]
    return _counts(done["model_category"].astype(object)), leaf_confidence(done).to_numpy(dtype=float)


def drift_report(pred: pd.DataFrame, clf, previous: Path | None, alpha: float) -> dict[str, Any]:
    """Drift of tonight's model outputs (before rules) vs the training data and the previous night."""
    counts, conf = _drift_inputs(pred)
    ref_counts, ref_conf = training_reference(clf)
    out: dict[str, Any] = {"alpha": alpha, "training": drift_block(ref_counts, ref_conf, counts, conf, alpha),
                           "previous": None, "previous_dir": None}
    if previous is not None:
        prev_path = Path(previous) / PREDICTIONS
        present = set(pq.ParquetFile(prev_path).schema_arrow.names)  # a night before leaf_confidence
        prev = pd.read_parquet(prev_path, columns=[c for c in DRIFT_COLUMNS if c in present])
        p_counts, p_conf = _drift_inputs(prev)
        out["previous"] = drift_block(p_counts, p_conf, counts, conf, alpha)
        out["previous_dir"] = str(previous)
    return out


def write_report(out_dir: Path, report: dict[str, Any]) -> dict[str, Path]:
    with folder_syncs_at_end():
        return {"json": atomic_write_json(report, out_dir / "report.json"),
                "md": atomic_write_text(render_markdown(report), out_dir / "report.md")}


def _fmt(x, spec=".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def _drift_line(name: str, block: dict[str, Any] | None) -> list[str]:
    if block is None:
        return [f"- vs {name}: no reference"]
    lines = []
    for what in ("category", "confidence"):
        b = block[what]
        flag = "**DRIFT**" if b["drift"] else "ok"
        lines.append(f"- vs {name}, {what}: {flag} ({b['test']} stat {_fmt(b['statistic'])}, "
                     f"p {_fmt(b['p_value'])}, PSI {_fmt(b['psi'])}; n {b['n_reference']} -> {b['n_current']})")
    return lines


def render_markdown(r: dict[str, Any]) -> str:
    s = r["summary"]
    c = s["counts"]
    lines = [f"# Nightly run {r['run_id']} ({r['date']})", "",
             f"Catalog `{r['catalog']}`, model {r['model']['name']} "
             f"{'version ' + str(r['model']['version']) if r['model']['version'] is not None else '(unversioned)'} "
             f"from `{r['model']['source']}`.", "",
             f"{s['rows']} rows: {c['accepted']} accepted, {c['accepted_partial']} accepted at a parent category "
             f"(refinement to review), {c['review']} to review, {c['rejected']} rejected. "
             f"Review rate {_fmt(s['review_rate'], '.1%')}, mean confidence {_fmt(s['mean_confidence'], '.3f')}.", ""]
    if s["rejections"]:
        lines += ["Rejected: " + ", ".join(f"{k} ({v})" for k, v in s["rejections"].items()), ""]
    if s["image_issues"]:
        lines += ["Predicted without image: " + ", ".join(f"{k} ({v})" for k, v in s["image_issues"].items()), ""]
    lines += ["| category | accepted | accepted at parent | review |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['accepted']} | {v.get('accepted_partial', 0)} | {v['review']} |"
              for k, v in list(s["by_category"].items())[:25]]
    d = r["drift"]
    lines += ["", f"## Drift (flagged when p < {d['alpha']})"]
    lines += _drift_line("training data", d["training"])
    lines += _drift_line(f"previous night ({d['previous_dir']})" if d["previous_dir"] else "previous night",
                         d["previous"])
    q = r.get("review_queue") or {}
    if q:
        lines += ["", "## Review queue", q.get("error") or f"{q.get('items')} items: " + ", ".join(
            f"`{Path(p).name}`" for p in (q.get("files") or {}).values())]
        lines += [f"- warning: {w}" for w in q.get("warnings") or []]
    return "\n".join(lines) + "\n"


def mlflow_metrics(r: dict[str, Any]) -> dict[str, float]:
    s = r["summary"]
    m = {"rows": s["rows"], **{f"n_{k}": v for k, v in s["counts"].items()}}
    for k in ("review_rate", "partial_rate", "mean_confidence"):
        if s[k] is not None:
            m[k] = s[k]
    for ref in ("training", "previous"):
        block = r["drift"][ref]
        for what in ("category", "confidence") if block else ():
            for stat in ("statistic", "p_value", "psi"):
                if block[what][stat] is not None:
                    m[f"drift_{ref}_{what}_{stat}"] = block[what][stat]
            m[f"drift_{ref}_{what}_flag"] = float(block[what]["drift"])
    return {k: float(v) for k, v in m.items()}


def open_mlflow_run(night_run_id: str, date: str, started_at: str, cfg) -> str:
    """The night's MLflow run id, before anything is logged to it.

    An earlier attempt of this night (same night id and start stamp) that crashed may have
    created the run already: it is found by its tags and reused. A new run is created with
    those tags in one call, so no crash can leave an untagged run to be duplicated later.
    """
    from ...tracking import setup

    mlflow = setup(cfg.tracking, experiment=cfg.nightly.mlflow_experiment)
    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name(cfg.nightly.mlflow_experiment)
    tags = {"night_run_id": night_run_id, "night_started_at": started_at}
    found = client.search_runs([exp.experiment_id], max_results=1, filter_string=" and ".join(
        f"tags.{k} = '{v}'" for k, v in tags.items()))
    if found:
        return found[0].info.run_id
    return client.create_run(exp.experiment_id, run_name=f"nightly-{date}", tags=tags).info.run_id


def log_to_mlflow(run_id: str, report: dict[str, Any], files: dict[str, Path], cfg) -> str:
    """Log params, metrics and report files into the night's run (resumed: logging twice is harmless)
    and end it FINISHED."""
    from ...tracking import setup

    mlflow = setup(cfg.tracking, experiment=cfg.nightly.mlflow_experiment)
    model = report["model"]
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.set_tags({"night_run_id": report["run_id"], "model_name": str(model["name"]),
                         "model_version": str(model["version"]), "date": report["date"]})
        mlflow.log_params({"catalog": report["catalog"][:500], "model_source": str(model["source"])[:500],
                           "model_run_id": str(model["run_id"]), "chunk_size": report["chunk_size"],
                           "drift_alpha": report["drift"]["alpha"]})
        mlflow.log_metrics(mlflow_metrics(report))
        for p in files.values():
            mlflow.log_artifact(str(p), artifact_path="report")
        return run.info.run_id
