"""The generic stacking layer: out-of-fold honesty and thresholds that hold on held-out data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sklearn.base import BaseEstimator, ClassifierMixin

from catalog_classifier.features.container import ItemInputs
from catalog_classifier.features.text import item_texts
from catalog_classifier.models.linear_text import LinearText
from stacking import Passthrough, StackedClassifier, StackParams, make_folds, route, select_thresholds

from conftest import SHARED, require_dataset


class _TestModel(ClassifierMixin, BaseEstimator):
    def __init__(self, classes=None):
        self.classes = classes

    def _labels(self, y):
        self.classes_ = np.asarray(self.classes if self.classes is not None else np.unique(y))

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(1)]


class Memorizer(_TestModel):
    """Answers perfectly for rows it was trained on, uniformly for rows it never saw.

    If the stacking layer ever fed in-fold predictions to the meta-classifier, the meta
    model would learn to trust it and its out-of-fold accuracy would be near 1.
    """

    log: list[tuple[set, set]] = []

    def fit(self, X, y):
        self._labels(y)
        self.table_ = dict(zip(X.titles, y))
        self.fit_ids_ = set(X.titles)
        return self

    def predict_proba(self, X):
        Memorizer.log.append((self.fit_ids_, set(X.titles)))
        C = len(self.classes_)
        out = np.full((len(X), C), 1.0 / C, dtype=np.float32)
        for i, t in enumerate(X.titles):
            if t in self.table_:
                out[i] = 0
                out[i, self.table_[t]] = 1
        return out


def _flipkart_inputs(demo_catalog):
    items = demo_catalog.items
    labels = items["category"].str.split(" > ").str[0]
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    ids = np.array([f"{i}:{t}" for i, t in enumerate(items["title"])], dtype=object)  # unique per row
    return ItemInputs(ids, ids), y, len(classes)


def test_meta_classifier_never_sees_in_fold_predictions(demo_catalog):
    X, y, C = _flipkart_inputs(demo_catalog)
    Memorizer.log.clear()
    stack = StackedClassifier({"memo": Memorizer()}, StackParams(n_folds=4, num_boost_round=50, seed=1))
    stack.fit(X, y, C)
    oof_pairs = Memorizer.log[:4]  # the 4 out-of-fold predictions come first
    assert all(not (fit & pred) for fit, pred in oof_pairs)
    assert set().union(*(p for _, p in oof_pairs)) == set(X.titles)
    # the memorizer carries no signal out of fold: meta accuracy must stay near chance (1/7)
    oof_acc = (stack.oof_proba_.argmax(1) == y).mean()
    assert oof_acc < 0.35, oof_acc
    # while the refit base model on its own training rows looks perfect (what leakage would use)
    assert (stack.base_models_["memo"].predict_proba(X).argmax(1) == y).all()


def test_folds_keep_duplicates_together(demo_catalog):
    items = demo_catalog.items
    groups = items["title"].str.lower().to_numpy()
    y = items["category"].str.split(" > ").str[0].factorize()[0]
    fold = make_folds(y, 5, 0, groups)
    per_group = pd.Series(fold).groupby(groups).nunique()
    assert (per_group == 1).all()
    assert (groups[:, None] == groups[None, :]).sum() > len(groups)  # real duplicates exist


@pytest.fixture(scope="module")
def bigbasket_text():
    path = require_dataset(SHARED / "bigbasket" / "BigBasket Products.csv")
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.config import CatalogConfig

    items = read_catalog(path, CatalogConfig(adapter="bigbasket")).items
    items = items.sample(n=9000, random_state=0).reset_index(drop=True)
    labels = items["category"].str.split(" > ").str[0]
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    texts = np.array(item_texts(items["title"], items["brand"], 200), dtype=object)
    return ItemInputs(texts, texts), y, len(classes)


def test_thresholds_reach_target_precision_on_held_out_rows(bigbasket_text):
    X, y, C = bigbasket_text
    tr, te = np.arange(6000), np.arange(6000, 9000)
    target = 0.95
    stack = StackedClassifier({"lin": LinearText(C=5.0, max_features=50_000)},
                              StackParams(n_folds=4, seed=0, num_boost_round=150, target_precision=target))
    stack.fit(X.take(tr), y[tr], C)
    proba = stack.predict_proba(X.take(te))
    pred, conf, acc = route(proba, stack.thresholds_)
    precision = (pred[acc] == y[te][acc]).mean()
    se = np.sqrt(target * (1 - target) / acc.sum())
    assert acc.mean() > 0.5  # the thresholds do accept most items...
    assert precision >= target - 2 * se, (precision, acc.sum())  # ...at the promised precision
    # and the plain argmax (no thresholds) is clearly below target: routing did real work
    assert (pred == y[te]).mean() < target


def test_select_thresholds_is_lowest_reaching_threshold():
    rng = np.random.default_rng(0)
    n = 2000
    conf = rng.uniform(0.34, 1.0, n)
    y_pred = np.zeros(n, dtype=int)
    correct = rng.uniform(size=n) < conf  # calibrated: P(correct) = confidence
    y_true = np.where(correct, 0, 1)
    proba = np.stack([conf, 1 - conf - 0.001, np.full(n, 0.001)], axis=1)
    thr = select_thresholds(y_true, proba, 0.9, min_support=20, scope="per_class")
    accepted = conf >= thr[0]
    assert (y_true[accepted] == 0).mean() >= 0.9
    lower = conf >= np.sort(conf[conf < thr[0]])[-1]  # one more item in: target missed
    assert (y_true[lower] == 0).mean() < 0.9 or lower.sum() == accepted.sum()
    assert np.isinf(thr[1]) and np.isinf(thr[2])  # never predicted -> never auto-accepted
    # pooled: class 1 (predicted only below the pooled cut) shares that cut; class 2 stays inf
    pooled = select_thresholds(y_true, proba, 0.9, min_support=20)
    assert pooled[1] == pooled[0] == thr[0] and np.isinf(pooled[2])


def test_passthrough_features_reach_the_meta_classifier(bigbasket_text):
    X, y, C = bigbasket_text
    n = 3000
    # a base model with no signal + a passthrough feature equal to the label: meta must find it
    pt = Passthrough(dense=y[:n, None].astype(float), dense_names=["label_code"], categorical=[0])
    stack = StackedClassifier({"flat": Flat()}, StackParams(n_folds=3, seed=0, num_boost_round=60))
    stack.fit(X.take(np.arange(n)), y[:n], C, passthrough=pt)
    assert (stack.oof_proba_.argmax(1) == y[:n]).mean() > 0.99


class Flat(_TestModel):
    """A base model with no signal: uniform probabilities."""

    def fit(self, X, y):
        self._labels(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1 / len(self.classes_))


class Noise(_TestModel):
    """A base model with no signal: random probabilities, different on every call."""

    def fit(self, X, y):
        self._labels(y)
        self.rng_ = np.random.default_rng(len(y))
        return self

    def predict_proba(self, X):
        return self.rng_.dirichlet(np.ones(len(self.classes_)), size=len(X)).astype(np.float32)


def test_stack_starts_from_its_bases_and_is_not_worse_than_the_best(bigbasket_text):
    """Boosting from the log-opinion pool: a useless base gets ~zero weight and the stack's
    held-out accuracy does not fall below its best base model's (on 2,500 real items)."""
    X, y, C = bigbasket_text
    idx = np.arange(2500)
    stack = StackedClassifier({"lin": LinearText(C=5.0, max_features=50_000), "noise": Noise()},
                              StackParams(n_folds=5, seed=0, num_boost_round=100, learning_rate=0.1))
    stack.fit(X.take(idx), y[idx], C)
    w = dict(zip(stack.pool_.names, stack.pool_.weights))
    assert w["lin"] > 0.5 and w["noise"] < 0.1 * w["lin"], w
    best_base = (stack.base_oof_["lin"].argmax(1) == y[idx]).mean()
    assert (stack.oof_proba_.argmax(1) == y[idx]).mean() >= best_base - 0.005
    # predictions add the pool back to the trees' raw scores: they agree with the OOF layer's view
    p = stack.predict_proba(X.take(np.arange(4000, 5000)))
    assert (p.argmax(1) == y[4000:5000]).mean() >= (stack.base_proba(X.take(np.arange(4000, 5000)))["lin"]
                                                    .argmax(1) == y[4000:5000]).mean() - 0.02
