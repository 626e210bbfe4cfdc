"""Large taxonomies: training cost of the stack at about 100, 300 and 1,000 leaf classes.

The rows are real BigBasket items (a fixed sample, the same rows at every size); only the
labels change: each real top-level category is split into sub-leaves (items dealt round-robin in
a seeded random order) in proportion to its size, until the leaf count is reached. The
leaves carry no meaning, so these runs say nothing about quality (that comes from real
levels only); they measure how training wall time and peak memory grow with the number of
classes. Each size is one fresh worker process (its own peak RSS). The ratios against the
smallest size, divided by the leaf ratio, must stay <= 1 (at most linear).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

LEAVES = (100, 300, 1000)
QUICK_LEAVES = (10, 30)


def split_leaves(labels: pd.Series, n_leaves: int, seed: int) -> pd.Series:
    """Split each label into sub-leaves (in proportion to its size) to reach ``n_leaves``
    leaves in all; every leaf keeps at least one item."""
    counts = labels.value_counts().sort_index()
    if n_leaves < len(counts):
        raise ValueError(f"{n_leaves} leaves < {len(counts)} real classes")
    share = counts / counts.sum() * n_leaves
    k = np.maximum(1, np.floor(share)).astype(int)
    rest = share - np.floor(share)
    for c in rest.sort_values(ascending=False).index:  # hand out the remainder, biggest first
        if k.sum() >= n_leaves:
            break
        if k[c] < counts[c]:
            k[c] += 1
    k = np.minimum(k, counts)
    rng = np.random.default_rng(seed)
    out = labels.astype(object).copy()
    for c, kc in k.items():
        idx = rng.permutation(np.flatnonzero(labels.to_numpy() == c))
        out.iloc[idx] = [f"{c} > leaf{j % kc}" for j in range(len(idx))]
    return out


def run_once(spec: dict) -> dict:
    """Worker task: one stack fit on the sample relabelled to ``spec['leaves']`` leaves."""
    import torch

    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.catalog.labels import make_labels
    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.config import load_config

    from .machine import cpu_seconds, peak_rss_mb

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    cfg = load_config(spec["config"]).with_overrides(**spec.get("overrides", {}))
    items = read_catalog(spec["path"], cfg.catalog).items
    items = items.sample(spec["rows"], random_state=cfg.stack.seed).sort_index().reset_index(drop=True)
    base = make_labels(items["category"], 1, 1)  # the 11 real top-level categories
    keep = base.notna().to_numpy()
    items, base = items.loc[keep].reset_index(drop=True), base[keep].reset_index(drop=True)
    labels = split_leaves(base, spec["leaves"], cfg.stack.seed)
    rss0 = peak_rss_mb()
    t0, c0 = time.perf_counter(), cpu_seconds()
    clf = CatalogClassifier(cfg).fit(items, labels=labels, progress=False)
    wall = time.perf_counter() - t0
    st = clf.stack_
    return {"leaves": int(labels.nunique()), "items": int(len(items)), "wall_s": round(wall, 2),
            "cpu_s": round(cpu_seconds() - c0, 2), "peak_rss_before_fit_mb": rss0,
            "meta": "rerank" if st.reranker_ is not None else "multiclass", "meta_rounds": int(st.num_rounds_),
            "top_k_recall": None if st.reranker_ is None else round(float(st.reranker_.oof_recall_), 4)}


def summarize(rows: list[dict]) -> dict:
    """Time and memory per leaf against the smallest run (<= 1: at most linear)."""
    rows = sorted(rows, key=lambda r: r["leaves"])
    first = rows[0]
    out = []
    for r in rows[1:]:
        lr = r["leaves"] / first["leaves"]
        t, m = r["wall_s"] / first["wall_s"], r["peak_rss_mb"] / first["peak_rss_mb"]
        cpu = r["cpu_s"] / first["cpu_s"] if first["cpu_s"] else None  # load-independent proxy
        out.append({"leaves": r["leaves"], "vs_leaves": first["leaves"], "leaf_ratio": round(lr, 2),
                    "time_ratio": round(t, 3), "memory_ratio": round(m, 3),
                    "cpu_ratio": None if cpu is None else round(cpu, 3),
                    "time_ratio_per_leaf_ratio": round(t / lr, 3), "memory_ratio_per_leaf_ratio": round(m / lr, 3),
                    "at_most_linear": bool(t <= lr and m <= lr)})
    return {"ratios": out, "at_most_linear": all(o["at_most_linear"] for o in out)}


def markdown(t: dict | None) -> list[str]:
    if not t:
        return []
    if t.get("skipped"):
        return [f"Not measured: {t['skipped']}", ""]
    out = [t["about"], "", "| leaves | items | meta | wall s | CPU s | peak RSS MB | time / smallest | "
           "memory / smallest |", "|---|---|---|---|---|---|---|---|"]
    first = t["runs"][0]
    for r in t["runs"]:
        out.append(f"| {r['leaves']} | {r['items']} | {r['meta']} | {r['wall_s']:.1f} | {r['cpu_s']:.0f} | "
                   f"{r['peak_rss_mb']:.0f} | {r['wall_s'] / first['wall_s']:.2f} | "
                   f"{r['peak_rss_mb'] / first['peak_rss_mb']:.2f} |")
    ok = t["summary"]["at_most_linear"]
    return out + ["", f"At most linear in the leaves (time and memory ratio <= leaf ratio): "
                      f"{'yes' if ok else '**no**'}.", ""]
