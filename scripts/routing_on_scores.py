"""Threshold settings compared offline on saved held-out scores (``evaluate --scores DIR``).

For each setting (``stack`` overrides as JSON) the routing is cross-fitted exactly as the
one-fit protocol does it (``evaluation_hier.crossfit_store``: fold k routed with leaf and
ancestor thresholds chosen on the other folds' scores) and the pooled held-out coverage at
full / any depth and hierarchical precision are printed per target, with the folds whose
precision falls under it. Model only (no rules); seconds per setting.

    .venv/bin/python scripts/routing_on_scores.py /tmp/scores/bigbasket_L2.npz configs/bigbasket.yaml \
        '{}' '{"precision_confidence": 0.8}' '{"precision_shrinkage": 200}'
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog_classifier.config import load_config  # noqa: E402
from catalog_classifier.evaluation import TARGETS  # noqa: E402
from catalog_classifier.evaluation_hier import GUARANTEED, crossfit_store, summary  # noqa: E402


def main(scores: str, config: str, settings: list[str]) -> list[dict]:
    z = np.load(scores)
    labels, y, fold = list(z["labels"]), z["label"], z["fold"]
    proba = z["proba_stack"].astype(np.float64)
    true = np.array(labels, dtype=object)[y]
    out = []
    for s in settings or ["{}"]:
        over = json.loads(s)
        params = load_config(config).with_overrides(stack=over).stack
        store = crossfit_store(labels, y, proba, fold, TARGETS, params)
        for variant in ("stack", GUARANTEED):
            for t in TARGETS:
                cat, status = store[variant, t]
                sm = summary(true, cat, status)
                under = [int(k) for k in np.unique(fold)
                         if (lambda f: f["hierarchical_precision"] is not None and f["hierarchical_precision"] < t)(
                             summary(true[fold == k], cat[fold == k], status[fold == k]))]
                row = {"setting": over, "variant": variant, "target": t, **{
                    k: round(v, 4) if isinstance(v, float) else v for k, v in sm.items()}, "folds_under": under}
                out.append(row)
                print(json.dumps(row), flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
