"""The many-class meta-classifier (stacking/rerank.py) on the real demo catalog, with the
switch forced low so its 43 level-3 categories take the re-ranker path."""
from __future__ import annotations

import numpy as np
import pytest

import stacking.rerank as rerank
from catalog_classifier.catalog.labels import make_labels
from catalog_classifier.features.container import ItemInputs
from catalog_classifier.features.text import item_texts
from catalog_classifier.models.linear_text import LinearText
from stacking import Passthrough, StackedClassifier, StackParams

PARAMS = dict(n_folds=4, seed=3, num_boost_round=60, max_classes_multiclass=5, rerank_top_k=6,
              min_data_in_leaf=5)


@pytest.fixture(scope="module")
def level3(demo_catalog):
    items = demo_catalog.items
    labels = make_labels(items["category"], 3, 5)
    keep = labels.notna().to_numpy()
    items, labels = items.loc[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    texts = np.array(item_texts(items["title"], items["description"], 300), dtype=object)
    # the row's own index as a passthrough column: lets the OOF test see which items a booster saw
    price = np.log1p(items["price"].astype(float).fillna(0).to_numpy())
    dense = np.stack([np.arange(len(y), dtype=float), price], 1)
    return ItemInputs(texts, texts), y, len(classes), Passthrough(dense, ["row_id", "log_price"], [])


def _fit(level3, **kw):
    X, y, C, pt = level3
    stack = StackedClassifier({"lin": LinearText(C=5.0, max_features=20_000)}, StackParams(**{**PARAMS, **kw}))
    return stack.fit(X, y, C, passthrough=pt)


@pytest.fixture(scope="module")
def fitted(level3):
    """One re-ranker fit (2 CPU cores are shared), with LightGBM's train and predict watched:
    which items each booster was trained on (fit + early-stopping rows), which it scored."""
    trained, scored, col = {}, [], {}
    real_train, real_scores = rerank.train_meta, rerank.raw_scores

    def spy_train(F, lab, names, *a, **kw):
        col["row_id"] = names.index("row_id")
        booster = real_train(F, lab, names, *a, **kw)
        seen = set(np.asarray(F[:, col["row_id"]]).astype(int).ravel())
        if kw.get("X_valid") is not None:
            seen |= set(np.asarray(kw["X_valid"][:, col["row_id"]]).astype(int).ravel())
        trained[id(booster)] = (booster, seen)  # keeps the booster alive: ids stay unique
        return booster

    def spy_scores(booster, F, *a, **kw):
        scored.append((id(booster), set(np.asarray(F[:, col["row_id"]]).astype(int).ravel())))
        return real_scores(booster, F, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rerank, "train_meta", spy_train)
        mp.setattr(rerank, "raw_scores", spy_scores)
        stack = _fit(level3)
    return stack, trained, scored


def test_rerank_path_gives_probabilities_over_all_classes(level3, fitted):
    X, y, C, pt = level3
    stack = fitted[0]
    assert C > 20
    assert stack.reranker_ is not None and stack.booster_ is None
    for p in (stack.oof_proba_, stack.predict_proba(X, pt)):
        assert p.shape == (len(y), C)
        assert np.allclose(p.sum(1), 1.0) and (p >= 0).all()
    # the re-ranker's held-out accuracy is real work: not below its single base model's
    base = (stack.base_oof_["lin"].argmax(1) == y).mean()
    acc = (stack.oof_proba_.argmax(1) == y).mean()
    assert acc >= base - 0.03, (acc, base)
    assert 0.5 < stack.reranker_.oof_recall_ <= 1.0
    # a non-candidate never outranks a candidate
    logits = stack.reranker_.logits(stack.base_proba(X), pt)
    top = np.sort(logits, 1)[:, ::-1]
    assert (top[:, PARAMS["rerank_top_k"] - 1] > top[:, PARAMS["rerank_top_k"]]).all()


def test_rerank_save_load_predicts_identically(level3, fitted, tmp_path):
    X, y, C, pt = level3
    stack = fitted[0]
    stack.save(tmp_path / "stack")
    assert not (tmp_path / "stack" / "meta_lgbm.txt").exists()
    back = StackedClassifier.load(tmp_path / "stack", allowed=[LinearText])
    assert back.reranker_ is not None
    np.testing.assert_array_equal(back.predict_proba(X, pt), stack.predict_proba(X, pt))
    np.testing.assert_array_equal(back.thresholds_, stack.thresholds_)


def test_rerank_out_of_fold_rows_never_scored_by_a_booster_that_saw_them(level3, fitted):
    X, y, C, pt = level3
    stack, trained, scored = fitted
    oof_calls = scored[:4]  # the 4 folds' out-of-fold scoring comes before the final fit
    assert len(trained) == 5
    for bid, rows in oof_calls:
        assert bid != id(stack.reranker_.booster_)
        assert rows and not (trained[bid][1] & rows)
    assert set().union(*(r for _, r in oof_calls)) == set(range(len(y)))
    # the final booster saw every row, and it is the one predictions use
    assert trained[id(stack.reranker_.booster_)][1] == set(range(len(y)))


def test_contributions_of_the_chosen_candidate_add_up_to_its_score(level3, fitted):
    X, y, C, pt = level3
    stack = fitted[0]
    r = stack.reranker_
    base = stack.base_proba(X)
    contrib, names, start = r.contributions(base, pt)
    assert contrib.shape == (len(y), len(r.feature_names_) + 1) and names[-1] == "bias"
    Fx, cand, init = r._features(base, pt, slice(None), r.pool_, r.log_prior_)
    s = rerank.raw_scores(r.booster_, Fx).reshape(cand.shape)
    best = (s + init).argmax(1)
    np.testing.assert_allclose(contrib.sum(1), s[np.arange(len(y)), best], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(start, init[np.arange(len(y)), best] if r.boost_from_pool else 0.0)


def test_stack_contributions_refuse_a_class_the_reranker_does_not_explain(level3, fitted):
    X, y, C, pt = level3
    stack = fitted[0]
    base = stack.base_proba(X)
    best = stack.predict_proba(X, pt, base_proba=base).argmax(1)
    contrib = stack.contributions(X, pt, base_proba=base, classes=best)  # the routed class: explained
    np.testing.assert_allclose(contrib, stack.contributions(X, pt, base_proba=base))
    other = (best + 1) % C
    with pytest.raises(ValueError, match="best class"):
        stack.contributions(X, pt, base_proba=base, classes=other)


def test_below_the_switch_the_multiclass_meta_stays(level3):
    stack = _fit(level3, max_classes_multiclass=100, num_boost_round=5, n_folds=2)
    assert stack.reranker_ is None and stack.booster_ is not None
