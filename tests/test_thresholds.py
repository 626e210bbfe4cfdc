"""Threshold selection shrunk toward the all-categories precision curve (stacking/thresholds.py)."""
from __future__ import annotations

import numpy as np
import pytest

from catalog_classifier.features.container import ItemInputs
from catalog_classifier.features.text import item_texts
from catalog_classifier.models.linear_text import LinearText
from stacking import make_folds, select_thresholds
from stacking.oof import out_of_fold_proba
from scipy.stats import binom

from stacking import StackParams
from stacking.thresholds import batch_floor, global_precision, lowest_threshold

from conftest import SHARED, require_dataset


@pytest.fixture(scope="module")
def bigbasket_oof():
    """Out-of-fold probabilities of the linear text model on 4,000 real BigBasket items."""
    path = require_dataset(SHARED / "bigbasket" / "BigBasket Products.csv")
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.config import CatalogConfig

    items = read_catalog(path, CatalogConfig(adapter="bigbasket")).items
    items = items.sample(n=4000, random_state=1).reset_index(drop=True)
    labels = items["category"].str.split(" > ").str[0]
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    texts = np.array(item_texts(items["title"], items["brand"], 200), dtype=object)
    fold = make_folds(y, 3, seed=0)
    p = out_of_fold_proba(LinearText(C=5.0, max_features=50_000), ItemInputs(texts, texts), y, fold,
                          len(classes))
    return y, p.astype(np.float64)


def test_global_precision_is_the_precision_above_each_confidence():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    y = np.array([0, 0, 0, 1])  # the 0.8 row is wrong
    got = global_precision(y, proba, np.array([0.9, 0.8, 0.7, 0.6, 0.95]))
    np.testing.assert_allclose(got[:4], [1.0, 0.5, 2 / 3, 0.75])
    assert got[4] == 1.0  # above every row: the top row's precision


def test_shrinkage_zero_is_the_per_class_rule_and_large_shrinkage_one_global_cut(bigbasket_oof):
    y, p = bigbasket_oof
    plain = select_thresholds(y, p, 0.95, min_support=10, scope="per_class")
    np.testing.assert_array_equal(select_thresholds(y, p, 0.95, 10, shrinkage=0.0, scope="per_class"), plain)
    # with an overwhelming prior every class cuts where the all-classes curve reaches the target
    huge = select_thresholds(y, p, 0.95, 10, shrinkage=1e9, scope="per_class")
    finite = huge[np.isfinite(huge)]
    assert len(finite) >= 8
    conf = p.max(1)
    gp = global_precision(y, p, conf)
    cut = conf[gp >= 0.95].min()  # lowest confidence at which the global curve holds the target
    assert np.all(finite >= cut - 1e-12)
    assert np.isclose(finite.min(), cut) or finite.min() - cut < 0.02
    assert not np.array_equal(huge, plain)


def _held_out(y, p, target, shrinkage, size=400, scope="per_class"):
    """Mean held-out (coverage, precision) over five disjoint ``size``-item selection sets."""
    held = np.arange(2000, 4000)
    pred, conf = p[held].argmax(1), p[held].max(1)
    cov, prec = [], []
    for s in range(2000 // size):
        sel = np.arange(s * size, (s + 1) * size)
        thr = select_thresholds(y[sel], p[sel], target, min_support=10, shrinkage=shrinkage, scope=scope)
        acc = conf >= thr[pred]
        cov.append(acc.mean())
        prec.append((pred[acc] == y[held][acc]).mean())
    return float(np.mean(cov)), float(np.mean(prec))


def test_shrunk_thresholds_hold_the_target_on_held_out_items_of_small_catalogs(bigbasket_oof):
    """Thresholds chosen on 400 real items (about 36 per category) and judged on 2,000 others.
    Each category's own curve is jagged: at 0.98 the lowest threshold that reaches the target
    on 36 items is too low for new items and held-out precision misses the target; shrunk
    toward the all-categories curve it holds. At 0.90 the shrunk thresholds accept clearly
    more items, still at the target."""
    y, p = bigbasket_oof
    _, prec_plain = _held_out(y, p, 0.98, 0.0)
    cov_shrunk, prec_shrunk = _held_out(y, p, 0.98, 200.0)
    assert prec_shrunk >= 0.98 - 0.005 and cov_shrunk > 0.2, (cov_shrunk, prec_shrunk)
    assert prec_plain < prec_shrunk - 0.005, (prec_plain, prec_shrunk)
    cov_plain, _ = _held_out(y, p, 0.90, 0.0)
    cov_shrunk, prec_shrunk = _held_out(y, p, 0.90, 200.0)
    assert cov_shrunk > cov_plain + 0.03 and prec_shrunk >= 0.90, (cov_plain, cov_shrunk, prec_shrunk)


def test_pooled_scope_is_one_cut_raised_only_for_classes_short_of_the_target(bigbasket_oof):
    """The default scope: every class starts at the pooled cut; a class whose own rows above it
    miss the target keeps its own (higher) threshold, one whose own curve reaches it lower down
    keeps that. On held-out items it accepts more than the
    per-class rule at the same target, and still holds it."""
    y, p = bigbasket_oof
    sel = np.arange(2000)
    pred, conf = p[sel].argmax(1), p[sel].max(1)
    thr = select_thresholds(y[sel], p[sel], 0.98, 10, shrinkage=200.0)
    own = select_thresholds(y[sel], p[sel], 0.98, 10, shrinkage=200.0, scope="per_class")
    cut = lowest_threshold(conf, pred == y[sel], 0.98, 10)
    for c in range(p.shape[1]):
        above = (pred == c) & (conf >= cut)
        if not (pred == c).any():
            assert np.isinf(thr[c])  # never predicted: no evidence, never auto-accepted
        elif above.any() and (y[sel][above] == c).mean() < 0.98:
            assert thr[c] == max(own[c], cut) and thr[c] > cut
        else:
            assert thr[c] == min(own[c], cut)
    assert (thr > cut).any() and (thr == cut).sum() >= 3
    for target in (0.98, 0.95):
        cov_pooled, prec_pooled = _held_out(y, p, target, 200.0, scope="pooled")
        cov_class, _ = _held_out(y, p, target, 200.0)
        assert cov_pooled > cov_class + 0.01 and prec_pooled >= target - 0.005, (target, cov_pooled, cov_class,
                                                                                  prec_pooled)


def test_batch_floor_is_the_lowest_precision_at_which_a_batch_falls_short_with_probability_delta():
    for m, target in ((50, 0.98), (210, 0.98), (800, 0.95), (5000, 0.98)):
        p = float(batch_floor(m, target, 0.025))
        k = np.ceil(target * m - 1e-9) - 1  # the most correct items that still fall short
        assert binom.cdf(k, m, p) == pytest.approx(0.025, abs=1e-9)
        assert binom.cdf(k, m, p - 1e-3) > 0.025 and target < p < 1
    assert batch_floor(5000, 0.98, 0.025) < batch_floor(210, 0.98, 0.025)  # small batches need more


def test_guarantee_covers_the_measured_precision_of_new_batches(bigbasket_oof):
    """Exchangeable splits of 4,000 real items: thresholds on 3,200, measured on the other 800.
    Bounding only the expected precision (risk_batch 0) leaves the batch's measured precision
    under the target in far more than 5% of the splits; covering the batch holds it in >= 95%
    and still accepts items."""
    y, p = bigbasket_oof
    conf, right = p.max(1), p.argmax(1) == y
    rng = np.random.default_rng(0)
    met = {0.0: [], 0.25: []}
    cov = {0.0: [], 0.25: []}
    for _ in range(100):
        perm = rng.permutation(len(y))
        cal, new = perm[:3200], perm[3200:]
        for r in met:
            t = lowest_threshold(conf[cal], right[cal], 0.95, 10, method="guaranteed", delta=0.05, batch_ratio=r)
            acc = conf[new] >= t
            cov[r].append(acc.mean())
            met[r].append(not acc.any() or right[new][acc].mean() >= 0.95)
    assert np.mean(met[0.25]) >= 0.95 and np.mean(cov[0.25]) > 0.3, (np.mean(met[0.25]), np.mean(cov[0.25]))
    assert np.mean(met[0.0]) < 0.95 and np.mean(cov[0.0]) > np.mean(cov[0.25]), (np.mean(met[0.0]),)


def test_risk_batch_is_a_whole_number_or_null():
    assert StackParams(risk_batch=None).risk_batch is None and StackParams(risk_batch=0).risk_batch == 0
    for bad in (-1, 1.5, True, "fold"):
        with pytest.raises(ValueError, match="risk_batch"):
            StackParams(risk_batch=bad)
