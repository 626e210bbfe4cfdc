"""Nested choice of ``stack.ancestor_confidence`` (the climb's margin) on ``scripts/hier_dump.py`` folds.

Each outer fold's held-out rows are routed as the product routes them (``route_items``: the fold
model's leaf thresholds, a ``HierarchicalRouter`` fitted on its rule-free calibration rows with
the candidate margin, and the catalog's rules), once per candidate. Then, per outer fold k, the
margin is chosen on the *other* folds' held-out rows only (the most items at any depth whose
pooled hierarchical precision reaches the target; none reaching it: the highest precision) and
fold k is judged with it. Several levels (one dump per ``--level``): one margin for all of
them, as the config holds one per catalog (every level's other folds must reach the target;
then the most items at any depth summed over the levels). Prints one JSON object: every
candidate's pooled figures per level and the nested choice's. Same rule as
``scripts/select_threshold_setting.py`` (BigBasket's shrinkage).

    PYTHONPATH=. .venv/bin/python scripts/select_ancestor_confidence.py /tmp/hier_dump/fk2 \
        /tmp/hier_dump/fk3 --catalog data/flipkart1050/flipkart_com-ecommerce_sample_1050.csv \
        --config data/flipkart1050/catalog.yaml --level 2 --level 3
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from catalog_classifier.catalog.schema import CATEGORY_SEP
from catalog_classifier.classifier import _load_rules, _rules_for
from catalog_classifier.evaluation_hier import summary
from catalog_classifier.routing import route_items
from stacking.hierarchy import HierarchicalRouter
from stacking.thresholds import batch_ratio, select_for

from scripts.hier_dump import nested_rows


def routed(items, true, fold, dumps, rules, s, conf: float, t: float) -> dict:
    """Outer fold -> (category, status, true label) of its held-out rows, routed with margin ``conf``."""
    out = {}
    for k, z in dumps.items():
        te = np.flatnonzero(fold == k)
        labels, cp, cy = list(z["labels"]), z["cal_p"], z["cal_y"]
        thr = select_for(s, cy, cp, t)
        router = HierarchicalRouter(t, s.min_support, conf, s.threshold_method, s.risk_delta, CATEGORY_SEP,
                                    batch_ratio(s, len(cy))).fit(labels, cy, cp, thr)
        r = route_items(items.iloc[te].reset_index(drop=True), z["test_p"], labels, thr, router, rules)
        out[k] = (r["category"].to_numpy(dtype=object), r["status"].to_numpy(dtype=object), true[te])
    return out


def pooled(parts: list) -> dict:
    cat, st, true = (np.concatenate([p[i] for p in parts]) for i in range(3))
    sm = summary(true, cat, st)
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in sm.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump", nargs="+", help="one scripts/hier_dump.py folder per --level, in the same order")
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--level", type=int, action="append", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--grid", type=float, nargs="+", default=[0.0, 0.6, 0.7, 0.8, 0.9, 0.95])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.98])
    a = ap.parse_args()
    if len(a.dump) != len(a.level):
        ap.error("give one dump folder per --level")
    levels = []
    for dump, level in zip(a.dump, a.level):
        cfg, _, items, labels_s, labels, _, fold = nested_rows(a.catalog, a.config, level, a.folds)
        rules, _ = _rules_for(_load_rules(cfg.rules.rules_dir), labels)  # as the fold models' fit keeps them
        dumps = {k: np.load(Path(dump) / f"fold{k}.npz", allow_pickle=True) for k in range(a.folds)}
        levels.append((level, cfg, items, labels_s.to_numpy(dtype=object), fold, dumps, rules))
    report = {"levels": a.level, "config": a.config, "grid": a.grid, "targets": {}}
    for t in a.targets:
        runs = {lv: {c: routed(items, true, fold, dumps, rules, cfg.stack, c, t) for c in a.grid}
                for lv, cfg, items, true, fold, dumps, rules in levels}
        folds = list(levels[0][5])
        chosen, parts = [], {lv: [] for lv in runs}
        for k in folds:
            def key(c):  # every level's other folds at the target; then the most items at any depth
                sms = [pooled([v for j, v in runs[lv][c].items() if j != k]) for lv in runs]
                ok = all(sm["hierarchical_precision"] is not None and sm["hierarchical_precision"] >= t for sm in sms)
                return (ok, sum(sm["coverage_any_depth"] if ok else (sm["hierarchical_precision"] or 0.0)
                                for sm in sms))
            c = max(a.grid, key=key)
            chosen.append({"fold": int(k), "ancestor_confidence": c})
            for lv in runs:
                parts[lv].append(runs[lv][c][k])
        out = {"nested_chosen": chosen}
        for lv in runs:
            under = [int(k) for k, p in zip(folds, parts[lv]) if (pooled([p])["hierarchical_precision"] or 1.0) < t]
            out[f"level_{lv}"] = {
                "each": [{"ancestor_confidence": c, **pooled(list(runs[lv][c].values()))} for c in a.grid],
                "nested": {**pooled(parts[lv]), "folds_under": under}}
        report["targets"][str(t)] = out
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
