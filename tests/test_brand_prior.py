"""The brand prior base model on real BigBasket brands: out of fold it predicts the
category of known brands well, and says nothing (NaN) for brands it never saw."""
from __future__ import annotations

import numpy as np

from catalog_classifier.features.container import ItemInputs
from catalog_classifier.features.text import normalize_text
from catalog_classifier.models.brand_prior import BrandPrior

from conftest import SHARED, require_dataset

BB = SHARED / "bigbasket" / "BigBasket Products.csv"


def test_brand_prior_out_of_fold_on_bigbasket(tmp_path):
    import pandas as pd

    df = pd.read_csv(require_dataset(BB), usecols=["brand", "category"]).dropna().sample(6000, random_state=0)
    classes = sorted(df["category"].unique())
    y = df["category"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    brands = np.array([normalize_text(b) for b in df["brand"]], dtype=object)
    X = ItemInputs(brands, brands, None, brands)
    tr, te = np.arange(4500), np.arange(4500, 6000)
    m = BrandPrior(min_count=2, classes=list(range(len(classes)))).fit(X.take(tr), y[tr])
    p = m.predict_proba(X.take(te))
    known = ~np.isnan(p).any(1)
    seen = {b for b, n in pd.Series(brands[tr]).value_counts().items() if n >= 2}
    assert (known == np.isin(brands[te], list(seen))).all()  # unseen/rare brand -> missing row
    assert known.mean() > 0.5
    assert (p[known].argmax(1) == y[te][known]).mean() > 0.8  # brands carry real signal here
    assert np.allclose(p[known].sum(1), 1, atol=1e-5)
    m.save(tmp_path / "bp")
    q = BrandPrior.load(tmp_path / "bp").predict_proba(X.take(te))
    assert np.array_equal(np.isnan(q), np.isnan(p)) and np.allclose(q[known], p[known])
