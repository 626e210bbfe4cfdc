"""Out-of-fold base predictions (stacking/oof.py): the same numbers as scikit-learn's
``cross_val_predict`` over our folds, a column per class even where a fold lacks one, and a
progress line per fold."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from catalog_classifier.features.container import ItemInputs
from catalog_classifier.features.text import item_texts
from catalog_classifier.models.linear_text import LinearText
from stacking import make_folds
from stacking.folds import fold_indices
from stacking.oof import out_of_fold_proba

from conftest import SHARED, require_dataset


@pytest.fixture(scope="module")
def bigbasket_sample():
    path = require_dataset(SHARED / "bigbasket" / "BigBasket Products.csv")
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.config import CatalogConfig

    items = read_catalog(path, CatalogConfig(adapter="bigbasket")).items
    items = items.sample(n=1500, random_state=3).reset_index(drop=True)
    labels = items["category"].str.split(" > ").str[0]
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    texts = np.array(item_texts(items["title"], items["brand"], 200), dtype=object)
    return ItemInputs(texts, texts), y, items["price"].fillna(0).to_numpy(float)


def test_matches_cross_val_predict_and_reports_each_fold(bigbasket_sample):
    X, y, _ = bigbasket_sample
    fold = make_folds(y, 3, seed=0)
    heard = []
    est = LinearText(C=5.0, max_features=20_000, classes=list(range(len(np.unique(y)))))
    got = out_of_fold_proba(LinearText(C=5.0, max_features=20_000), X, y, fold, len(np.unique(y)), heard.append)
    cv = [fold_indices(fold, k) for k in np.unique(fold)]
    want = cross_val_predict(est, X, y, cv=cv, method="predict_proba")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32 and got.shape == (len(y), len(np.unique(y)))
    assert len(heard) == 3 and heard[-1].strip().startswith("fold 3/3")


def test_a_class_missing_from_a_training_fold_keeps_its_column(bigbasket_sample):
    """An estimator without a ``classes`` parameter sees only its fold's labels: its columns
    are placed by ``classes_``, the missing class gets probability 0 in that fold."""
    X, y, price = bigbasket_sample
    F = np.log1p(price)[:, None]
    fold = make_folds(y, 3, seed=0)
    rare = np.bincount(y).argmin()
    y2 = y.copy()
    only = np.flatnonzero(y2 == rare)
    fold = fold.copy()
    fold[only] = fold[only[0]]  # every row of the rare class in one fold: absent from its training part
    got = out_of_fold_proba(LogisticRegression(max_iter=500), F, y2, fold, len(np.unique(y)))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(got[only, rare] == 0)  # never trained on it, so never predicted
    other = np.flatnonzero(fold != fold[only[0]])
    assert got[other, rare].min() > 0  # the other folds did see the class
