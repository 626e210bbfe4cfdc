"""Every registered base model is a scikit-learn estimator (clone, params, fit -> self,
predict_proba columns = classes_, save/load), on a real slice of the demo catalog, and the
models stack through scikit-learn's own cross_val_predict."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.utils.validation import check_is_fitted

from catalog_classifier.catalog.cleaning import title_key
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.config import Config
from catalog_classifier.models import available, classes, create
from catalog_classifier.models.peers import TfidfLR
from stacking import StackedClassifier, StackParams

from conftest import fast_config

# models that document NaN rows: no usable image / a brand not seen often enough in training
NAN_ROWS = {"image_head", "brand_prior"}


@pytest.fixture(scope="module")
def demo_slice(demo_catalog):
    """180 real demo items (level-1 labels), their inputs, labels and title groups."""
    items = demo_catalog.items.sample(n=180, random_state=0).reset_index(drop=True)
    cfg = fast_config(models={"char_cnn": {"epochs": 2, "max_len": 128}},
                      stack={"base_models": tuple(available())})
    clf = CatalogClassifier(cfg)
    labels = clf.labels_for(items)
    keep = labels.notna().to_numpy()
    items, labels = items.loc[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
    y = labels.map({c: i for i, c in enumerate(sorted(labels.unique()))}).to_numpy()
    X, _ = clf.inputs(items, demo_catalog.image_root)
    groups = np.array([title_key(t) for t in X.titles], dtype=object)
    assert X.embeddings is not None and np.isnan(X.embeddings).any(1).mean() < 0.5
    return cfg, X, y, groups


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _models(cfg):
    return [(name, create(name, cfg)) for name in available()] + [("tfidf_lr_peer", TfidfLR())]


def test_every_registered_model_is_listed_and_allowed():
    assert set(available()) >= {"image_head", "char_cnn", "linear_text", "brand_prior"}
    assert {type(create(n, Config())) for n in available()} == set(classes())


def test_estimator_contract(demo_slice, tmp_path):
    cfg, X, y, _ = demo_slice
    tr, rows = np.arange(120), np.arange(len(y))  # scored: held-out rows and training rows
    for name, est in _models(cfg):
        params = est.get_params()
        # __init__ stores its parameters as given and nothing else
        assert set(vars(type(est)(**params))) == set(params), name
        assert set(params) == set(inspect.signature(type(est).__init__).parameters) - {"self"}, name
        twin = clone(est)
        assert twin is not est and all(_same(twin.get_params()[k], v) for k, v in params.items()), name
        twin.set_params(seed=123) if "seed" in params else twin.set_params(classes=[0, 1])
        assert twin.get_params() != est.get_params()  # set_params changes the clone only
        with pytest.raises(NotFittedError):
            check_is_fitted(est)
        fitted = est.fit(X.take(tr), y[tr])
        assert fitted is est, name
        np.testing.assert_array_equal(est.classes_, np.unique(y[tr]))
        p = est.predict_proba(X.take(rows))
        assert p.shape == (len(rows), len(est.classes_)), name
        missing = np.isnan(p).all(1)
        assert not (np.isnan(p).any(1) & ~missing).any(), name  # a row is scored or it is not
        if name not in NAN_ROWS:
            assert not missing.any(), name
        np.testing.assert_allclose(p[~missing].sum(1), 1.0, atol=1e-5, err_msg=name)
        assert (~missing).any(), name
        if name == "image_head":  # NaN exactly where the item has no usable image
            np.testing.assert_array_equal(missing, np.isnan(X.embeddings).any(1))
        if name == "brand_prior":  # NaN exactly where the brand was not seen min_count times
            np.testing.assert_array_equal(missing, ~np.isin(X.brands, list(est.table_)))
        if name == "tfidf_lr_peer":
            continue  # evaluation only: never saved
        est.save(tmp_path / name)
        back = type(est).load(tmp_path / name)
        assert back.get_params() == est.get_params(), name
        np.testing.assert_array_equal(back.classes_, est.classes_)
        np.testing.assert_array_equal(back.predict_proba(X.take(rows)), p, err_msg=name)


def test_declared_inputs_are_the_only_ones_read(demo_slice):
    """``reads`` (what the content cache of base_cache.py relies on): every registered model
    declares it, and replacing the fields it does not read changes none of its probabilities."""
    from catalog_classifier.features.container import ItemInputs

    cfg, X, y, _ = demo_slice
    fields = ("texts", "titles", "embeddings", "brands")
    rng = np.random.default_rng(0)
    other = ItemInputs(X.texts[::-1].copy(), X.titles[::-1].copy(), rng.normal(size=X.embeddings.shape).astype(np.float32),
                       X.brands[::-1].copy())
    for name, est in _models(cfg)[:-1]:  # the registered ones
        assert est.reads is not None and set(est.reads) <= set(fields), name
        est.fit(X, y)
        mixed = ItemInputs(*(getattr(X if f in est.reads else other, f) for f in fields))
        np.testing.assert_array_equal(est.predict_proba(mixed), est.predict_proba(X), err_msg=name)
        read = est.reads[0]  # and the field it reads does move it
        moved = ItemInputs(*(getattr(other if f == read else X, f) for f in fields))
        assert not np.array_equal(est.predict_proba(moved), est.predict_proba(X), equal_nan=True), name


def test_classes_parameter_gives_every_column(demo_slice):
    """Fitted on rows lacking a class, a model told the full label set still predicts its column."""
    cfg, X, y, _ = demo_slice
    rows = np.flatnonzero(y != y.max())
    full = list(range(int(y.max()) + 1))
    for name, est in _models(cfg):
        est.set_params(classes=full).fit(X.take(rows), y[rows])
        p = est.predict_proba(X.take(np.arange(30)))
        assert p.shape == (30, len(full)), name
        np.testing.assert_array_equal(est.classes_, full)
        with pytest.raises(ValueError):
            clone(est).set_params(classes=full[:-2]).fit(X.take(np.arange(len(y))), y)


def test_models_stack_through_sklearn_cross_val_predict(demo_slice, tmp_path):
    """sklearn's cross_val_predict on the product's grouped folds gives the very out-of-fold
    probabilities StackedClassifier feeds its meta-classifier, for every registered model."""
    cfg, X, y, groups = demo_slice
    cv = list(StratifiedGroupKFold(3, shuffle=True, random_state=0).split(np.zeros(len(y)), y, groups))
    fold = np.empty(len(y), dtype=np.int64)
    for k, (_, test) in enumerate(cv):
        fold[test] = k
    ests = {name: create(name, cfg) for name in available()}
    oof = {name: cross_val_predict(est, X, y, cv=cv, method="predict_proba") for name, est in ests.items()}
    stack = StackedClassifier(ests, StackParams(n_folds=3, num_boost_round=30), num_threads=1)
    stack.fit(X, y, int(y.max()) + 1, fold=fold)
    for name in ests:
        np.testing.assert_array_equal(stack.base_oof_[name], oof[name].astype(np.float32), err_msg=name)
        assert not hasattr(ests[name], "classes_"), name  # the templates are cloned, never fitted
    # real signal out of fold (7 classes: chance is ~0.14; the 2-epoch char-CNN is near chance here)
    assert (oof["linear_text"].argmax(1) == y).mean() > 0.5
    assert (stack.oof_proba_.argmax(1) == y).mean() > 0.5
    # a saved stack re-creates only the base model classes its caller allows
    stack.save(tmp_path / "stack")
    back = StackedClassifier.load(tmp_path / "stack", allowed=classes())
    np.testing.assert_array_equal(back.predict_proba(X), stack.predict_proba(X))
    with pytest.raises(ValueError, match="not in the allowed list"):
        StackedClassifier.load(tmp_path / "stack", allowed=[type(ests["linear_text"])])


def test_model_parameters_come_from_the_config_by_name():
    cfg = Config.from_dict({"models": {"linear_text": {"C": 2.5, "max_features": 1000},
                                       "char_cnn": {"kernel_sizes": [3, 7]}}, "stack": {"seed": 5}})
    lin = create("linear_text", cfg)
    assert (lin.C, lin.max_features, lin.seed) == (2.5, 1000, 5)  # seed follows stack.seed
    assert create("char_cnn", cfg).kernel_sizes == (3, 7)
    assert create("image_head", Config()).get_params() == create("image_head", cfg).get_params() | {"seed": 13}
    merged = cfg.with_overrides(models={"linear_text": {"C": 1.0}})
    assert merged.models["linear_text"] == {"C": 1.0, "max_features": 1000}  # one key overridden
    with pytest.raises(ValueError, match="max_featurez"):
        Config.from_dict({"models": {"linear_text": {"max_featurez": 10}}})
    with pytest.raises(ValueError, match="char_cnnn"):
        Config.from_dict({"models": {"char_cnnn": {"epochs": 1}}})
