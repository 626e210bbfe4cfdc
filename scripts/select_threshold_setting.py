"""Nested choice of the point-mode threshold setting on saved scores (`evaluate --scores`): per outer
fold k the setting is chosen by an inner cross-fit over the other folds only (the most items at any
depth whose hierarchical precision reaches the target, without fewer at full depth than no setting),
then fold k is routed with it. Prints one JSON line per target.

    .venv/bin/python scripts/select_threshold_setting.py /tmp/scores/bigbasket_L2.npz configs/bigbasket.yaml
"""
import json, sys
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from catalog_classifier.config import load_config
from catalog_classifier.evaluation_hier import crossfit_store, summary
z = np.load(sys.argv[1]); cfgp = sys.argv[2]
labels, y, fold = list(z["labels"]), z["label"], z["fold"]
proba = z["proba_stack"].astype(np.float64)
true = np.array(labels, dtype=object)[y]
grid = [{}, {"precision_shrinkage": 50}, {"precision_shrinkage": 200}, {"precision_shrinkage": 500},
        {"precision_shrinkage": 1000}, {"precision_shrinkage": 3000}, {"precision_confidence": 0.8}, {"precision_confidence": 0.95}]
params = [load_config(cfgp).with_overrides(stack=g).stack for g in grid]
for t in (0.95, 0.98):
    cat_all = np.empty(len(y), dtype=object); st_all = np.empty(len(y), dtype=object); chosen = []
    for k in np.unique(fold):
        tr = fold != k
        best = None
        base_full = None
        for g, p in zip(grid, params):
            s = crossfit_store(labels, y[tr], proba[tr], fold[tr], (t,), p)
            sm = summary(true[tr], *s["stack", t])
            if base_full is None: base_full = sm["coverage_full_depth"]
            ok = sm["hierarchical_precision"] >= t and sm["coverage_full_depth"] >= base_full
            key = (ok, sm["coverage_any_depth"] if ok else sm["hierarchical_precision"])
            if best is None or key > best[0]: best = (key, g, p, sm)
        chosen.append((int(k), best[1], round(best[3]["coverage_full_depth"], 4), round(best[3]["coverage_any_depth"], 4), round(best[3]["hierarchical_precision"], 4)))
        s = crossfit_store(labels, y, proba, fold, (t,), best[2])
        cat, st = s["stack", t]
        cat_all[fold == k], st_all[fold == k] = cat[fold == k], st[fold == k]
    sm = summary(true, cat_all, st_all)
    under = [int(k) for k in np.unique(fold) if summary(true[fold == k], cat_all[fold == k], st_all[fold == k])["hierarchical_precision"] < t]
    print(json.dumps({"target": t, "chosen": chosen, **{k: round(v, 4) if isinstance(v, float) else v for k, v in sm.items()}, "folds_under": under}), flush=True)
