"""linear_text at many classes: one binary problem per class (``ovr_from``) instead of one
multinomial problem, on real BigBasket rows: probabilities per row, columns for every class
(also one absent from the training rows), held-out accuracy next to the multinomial fit, and a
save/load round trip."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from catalog_classifier.features.container import ItemInputs
from catalog_classifier.features.text import item_texts
from catalog_classifier.models.linear_text import LinearText

from conftest import SHARED, require_dataset


@pytest.fixture(scope="module")
def subcategories():
    path = require_dataset(SHARED / "bigbasket" / "BigBasket Products.csv")
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.config import CatalogConfig

    items = read_catalog(path, CatalogConfig(adapter="bigbasket")).items
    items = items.sample(n=3000, random_state=5).reset_index(drop=True)
    labels = items["category"].str.split(" > ").str[:2].str.join(" > ")
    keep = labels.map(labels.value_counts()) >= 6  # every kept class on both halves, in all likelihood
    items, labels = items[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
    texts = np.array(item_texts(items["title"], items["description"], 300), dtype=object)
    return ItemInputs(texts, texts), labels.to_numpy(object)


def _split(n):
    idx = np.random.default_rng(0).permutation(n)
    return idx[: n // 2], idx[n // 2:]


def test_one_vs_rest_from_the_class_count_matches_multinomial_quality(subcategories):
    X, y = subcategories
    tr, te = _split(len(y))
    n_classes = len(np.unique(y[tr]))
    assert n_classes > 40
    ovr = LinearText(max_features=50_000, ovr_from=n_classes).fit(X.take(tr), y[tr])
    mn = LinearText(max_features=50_000, ovr_from=n_classes + 1).fit(X.take(tr), y[tr])
    assert isinstance(ovr.model_, OneVsRestClassifier) and isinstance(mn.model_, LogisticRegression)
    p_ovr, p_mn = ovr.predict_proba(X.take(te)), mn.predict_proba(X.take(te))
    assert p_ovr.shape == p_mn.shape == (len(te), n_classes)
    np.testing.assert_allclose(p_ovr.sum(1), 1.0, rtol=1e-5)
    seen = np.isin(y[te], ovr.classes_)
    acc = {name: float((m.classes_[p.argmax(1)] == y[te])[seen].mean())
           for name, m, p in (("ovr", ovr, p_ovr), ("mn", mn, p_mn))}
    assert acc["mn"] > 0.6
    assert acc["ovr"] >= acc["mn"] - 0.03, acc


def test_a_class_absent_from_training_keeps_a_zero_column_and_survives_save(subcategories, tmp_path):
    X, y = subcategories
    tr, te = _split(len(y))
    classes = sorted(set(y))
    gone = classes[len(classes) // 2]
    tr = tr[y[tr] != gone]
    # the declared classes count, not the ones a fold happens to hold: every fold of a stack fits alike
    m = LinearText(max_features=20_000, ovr_from=len(classes), classes=classes).fit(X.take(tr), y[tr])
    assert isinstance(m.model_, OneVsRestClassifier)
    p = m.predict_proba(X.take(te))
    assert p.shape == (len(te), len(classes))
    assert np.all(p[:, classes.index(gone)] == 0)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    m.save(tmp_path / "lt")
    back = LinearText.load(tmp_path / "lt")
    assert back.ovr_from == len(classes)
    np.testing.assert_array_equal(back.predict_proba(X.take(te)), p)


def test_few_classes_stay_multinomial(subcategories):
    X, y = subcategories
    top = np.array([s.split(" > ")[0] for s in y], dtype=object)
    m = LinearText(max_features=20_000).fit(X.take(np.arange(600)), top[:600])
    assert len(m.classes_) < m.ovr_from and isinstance(m.model_, LogisticRegression)
