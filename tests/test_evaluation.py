"""`evaluate`: nested CV routes held-out items exactly as the product would (rules included),
and the one-fit out-of-fold protocol says which protocol produced its records."""
from __future__ import annotations

import numpy as np

from catalog_classifier.evaluation import cross_validate, records
from catalog_classifier.evaluation_oof import crossfit_accept
from stacking import StackParams

from conftest import fast_config


def test_nested_cv_routes_with_rules_and_reports_both_views(demo_catalog):
    items = demo_catalog.items
    cfg = fast_config(models={"char_cnn": {"epochs": 1}}, stack={"num_boost_round": 40})
    res = cross_validate(items, cfg, "flipkart1050", demo_catalog.image_root, n_outer=2, progress=False,
                         ablation=False)  # ablations: tests/test_ablation.py
    titles = items["title"].str.lower()
    towel = titles.str.contains(r"\btowels?\b").to_numpy()
    assert towel.sum() >= 20
    for t, acc in res.accepted.items():
        # the towel rule forces review: the product never auto-accepts a towel...
        assert not acc[towel].any()
        # ...while the model alone (thresholds only) does accept some of them
        assert res.accepted_model[t][towel].any()
    recs = {r["model"]: r for r in records(res)}
    rec = recs["stack"]
    for key in ("095", "098"):
        assert 0 < rec[f"coverage_at_{key}"] <= 1 and rec[f"precision_at_{key}"] is not None
        assert rec[f"model_only_coverage_at_{key}"] > 0
        # the climb keeps the flat product's full-depth acceptances and can only add partial ones
        assert rec[f"coverage_full_depth_at_{key}"] == rec[f"coverage_at_{key}"]
        assert rec[f"coverage_any_depth_at_{key}"] >= rec[f"coverage_full_depth_at_{key}"]
        assert rec[f"hierarchical_precision_at_{key}"] is not None
    assert rec["mean_accepted_depth"] >= 1
    guaranteed = recs["stack_guaranteed"]
    assert [f["fold"] for f in guaranteed["per_fold"]] == [0, 1]
    assert all(len(f["precision_ci_at_098"]) == 2 for f in guaranteed["per_fold"])
    assert rec["cv"].startswith("2-fold, nested")
    assert [f["fold"] for f in rec["per_fold"]] == [0, 1]


def test_crossfit_thresholds_never_come_from_the_judged_fold():
    # fold 0 is all errors at high confidence; fold 1 all correct. If fold 0's own rows chose
    # its threshold, nothing of fold 0 would be accepted; chosen on fold 1, all of it is.
    n = 200
    y = np.zeros(n, dtype=int)
    proba = np.tile([0.9, 0.1], (n, 1))
    fold = np.r_[np.zeros(n // 2, int), np.ones(n // 2, int)]
    y[: n // 2] = 1  # wrong
    acc = crossfit_accept(y, proba, fold, 0.95, StackParams(min_support=10))
    assert acc[: n // 2].all()  # thresholds from fold 1 (precision 1.0) applied to fold 0
    assert not acc[n // 2:].any()  # thresholds from fold 0 (precision 0) applied to fold 1
