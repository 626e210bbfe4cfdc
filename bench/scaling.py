"""Scaling: the nightly path on the demo catalog replicated 1x, 4x, 8x, 16x.

Replica r > 0 gets item_id ``<uniq_id>-r<r>``, so every row is a distinct item for the
job (no duplicate-id rejections), while the image files are shared: with a fresh
embedding cache per size, the first replica's images go through the CNN and every later
replica hits the cache. Time therefore grows as cold(1x) + (r - 1) x warm(1x); the
marginal seconds per replica (4x -> 16x against 1x -> 4x) is the linearity check. Each
size runs in its own process, so its peak RSS is its own.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd


def replicate_catalog(src: str | Path, dst: Path, replicas: int, rows: int | None = None,
                      id_column: str = "uniq_id") -> int:
    raw = pd.read_csv(src, dtype=str, keep_default_na=False)
    if rows:
        raw = raw.head(rows)
    parts = []
    for r in range(replicas):
        part = raw.copy()
        if r:
            part[id_column] = part[id_column] + f"-r{r}"
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(dst, index=False)
    return len(out)


def run_once(spec: dict) -> dict:
    """Worker task: one nightly run (model load included in the process, not in wall_s)."""
    import torch

    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.config import load_config
    from catalog_classifier.nightly.batch.job import run_nightly
    from .machine import peak_rss_mb

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    cfg = load_config(spec["config"]).with_overrides(**spec.get("overrides", {}))
    clf = CatalogClassifier.load(spec["model_dir"])
    rss_loaded = peak_rss_mb()
    t0 = time.perf_counter()
    res = run_nightly(spec["catalog"], Path(spec["out"]), clf, cfg, force=True, progress=False, date="2000-01-01")
    wall = time.perf_counter() - t0
    items = int(sum(res.counts.values()))
    return {"wall_s": round(wall, 2), "items": items, "items_per_s": round(items / wall, 1),
            "counts": res.counts, "peak_rss_after_model_load_mb": rss_loaded}


def summarize(rows: list[dict]) -> dict:
    """Linearity and memory checks over the scaling rows (sorted by replicas)."""
    rows = sorted(rows, key=lambda r: r["replicas"])
    first, last = rows[0], rows[-1]
    out = {"memory_ratio_largest_to_1x": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3)}
    out["memory_target"] = {"target": 1.3, "measured": out["memory_ratio_largest_to_1x"],
                            "met": bool(out["memory_ratio_largest_to_1x"] <= 1.3)}
    marg = []
    for a, b in zip(rows, rows[1:]):
        marg.append({"from": a["replicas"], "to": b["replicas"],
                     "seconds_per_extra_replica": round((b["wall_s"] - a["wall_s"]) / (b["replicas"] - a["replicas"]), 2)})
    out["marginal"] = marg
    return out
