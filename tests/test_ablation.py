"""Ablations: the stack without one base model re-fits only the meta layer, on the same folds,
and evaluation reports it (`stack_without_<base>`) for both protocols."""
from __future__ import annotations

import numpy as np
import pytest

from catalog_classifier.evaluation import cross_validate, records
from catalog_classifier.evaluation_oof import oof_cross_validate
from catalog_classifier.features.container import ItemInputs
from catalog_classifier.features.tabular import norm_key
from catalog_classifier.features.text import normalize_text
from catalog_classifier.models.brand_prior import BrandPrior
from catalog_classifier.models.linear_text import LinearText
from catalog_classifier.report_table import ablation_table, markdown_table
from stacking import StackedClassifier, StackParams

from conftest import fast_config

BASES = ("image_head", "char_cnn", "linear_text")


def _stack(demo_catalog, seed=3):
    items = demo_catalog.items
    labels = items["category"].str.split(" > ").str[:2].str.join(" > ")
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    titles = np.array([normalize_text(t, 512) for t in items["title"]], dtype=object)
    brands = np.array([norm_key(b) or "" for b in items["brand"]], dtype=object)
    X = ItemInputs(titles, titles, None, brands)
    st = StackedClassifier({"lin": LinearText(C=5.0, max_features=20_000), "brand": BrandPrior()},
                           StackParams(n_folds=3, num_boost_round=60, seed=seed), num_threads=1)
    return st.fit(X, y, len(classes)), X


@pytest.fixture(scope="module")
def fitted(demo_catalog):
    return _stack(demo_catalog)


def test_without_refits_only_the_meta_layer_on_the_same_folds(fitted, demo_catalog):
    st, X = fitted
    full = st.predict_proba(X)
    # nothing removed: the meta layer re-fitted through the same code gives the very same stack
    same = st.without([])
    np.testing.assert_array_equal(same.predict_proba(X), full)
    np.testing.assert_array_equal(same.oof_proba_, st.oof_proba_)
    # and a fresh fit with the same seed too (the split of fit changed nothing)
    again, _ = _stack(demo_catalog)
    np.testing.assert_array_equal(again.predict_proba(X), full)

    ab = st.without(["brand"])
    assert list(ab.base_models_) == ["lin"]
    assert ab.base_models_["lin"] is st.base_models_["lin"]  # shared, never re-trained
    assert ab.base_oof_["lin"] is st.base_oof_["lin"]
    np.testing.assert_array_equal(ab.fold_, st.fold_)
    assert not any(n.startswith("brand") for n in ab.feature_names_)
    p = ab.predict_proba(X)
    assert p.shape == full.shape and np.allclose(p.sum(1), 1)
    assert np.abs(p - full).max() > 0.05  # the brand prior mattered to the meta layer
    # the original stack is untouched
    np.testing.assert_array_equal(st.predict_proba(X), full)


def test_without_rejects_unknown_or_all_bases(fitted):
    st, _ = fitted
    with pytest.raises(ValueError, match="no base model named"):
        st.without(["char_cnn"])
    with pytest.raises(ValueError, match="at least one base model"):
        st.without(["lin", "brand"])


@pytest.fixture(scope="module")
def nested(demo_catalog):
    cfg = fast_config(models={"char_cnn": {"epochs": 1}}, stack={"num_boost_round": 40})
    return cross_validate(demo_catalog.items, cfg, "flipkart1050", demo_catalog.image_root, n_outer=2,
                          progress=False)


def _check_records(recs, res, routing_key):
    by = {r["model"]: r for r in recs}
    stack = by["stack"]
    for b in BASES:
        r = by[f"stack_without_{b}"]
        for k in ("accuracy", "macro_f1", "delta_macro_f1", "coverage_at_098", "precision_at_098"):
            assert r[k] is not None, (b, k)
        assert r["delta_macro_f1"] == pytest.approx(r["macro_f1"] - stack["macro_f1"])
        assert 0 < r["coverage_at_098"] <= 1
        assert (r["cv"], r["n_items"], r["n_categories"]) == (stack["cv"], stack["n_items"], stack["n_categories"])
        # a stack without a base model is another model: its predictions differ
        p = res.ablation[f"stack_without_{b}"]
        assert p.shape == res.proba["stack"].shape
        assert np.abs(p - res.proba["stack"]).max() > 0.05, b
        assert (p.sum(1) > 0.99).all()  # every row scored by its own outer fold
    assert stack[routing_key] > 0


def test_nested_cv_records_an_ablation_per_base_model(nested):
    _check_records(records(nested), nested, "model_only_coverage_at_098")
    table = ablation_table(records(nested))
    assert "without char_cnn" in table and "| flipkart1050 | 1 |" in table
    assert "stack_without" not in markdown_table(records(nested))  # kept out of the main table


def test_oof_protocol_records_ablations_and_can_turn_them_off(demo_catalog):
    cfg = fast_config(models={"char_cnn": {"epochs": 1}}, stack={"num_boost_round": 40})
    res, clf = oof_cross_validate(demo_catalog.items, cfg, "flipkart1050", demo_catalog.image_root, progress=False)
    _check_records(records(res), res, "coverage_at_098")
    # the ablated stacks are re-fitted on the fitted stack's own folds and scored out of fold
    st = clf.stack_
    rows = demo_catalog.items.loc[clf.labels_for(demo_catalog.items).notna()].reset_index(drop=True)
    again = st.without(["char_cnn"], clf.passthrough(rows, demo_catalog.image_root))
    np.testing.assert_array_equal(again.fold_, st.fold_)
    np.testing.assert_allclose(again.oof_proba_, res.ablation["stack_without_char_cnn"])
    # two cheap base models (would give two ablations), ablations turned off: none recorded
    off, _ = oof_cross_validate(demo_catalog.items,
                                cfg.with_overrides(stack={"base_models": ["image_head", "linear_text"]}),
                                "flipkart1050", demo_catalog.image_root, progress=False, ablation=False)
    assert {r["model"] for r in records(off)} == {"stack", "stack_guaranteed", "image", "linear_text", "tfidf_lr"}
