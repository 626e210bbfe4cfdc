"""Drift tests on the trained model's real out-of-fold outputs: the bar moves with sample size."""
from __future__ import annotations

import numpy as np
import pytest

from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.nightly.batch.drift import category_drift, confidence_drift, psi, training_reference


@pytest.fixture(scope="module")
def reference(trained_model_dir):
    return training_reference(CatalogClassifier.load(trained_model_dir))


def _counts(shares: dict[str, float], n: int) -> dict[str, int]:
    return {k: int(round(v * n)) for k, v in shares.items()}


def test_category_drift(reference):
    counts, _ = reference
    total = sum(counts.values())
    same = category_drift(counts, counts, alpha=0.01)
    assert same["p_value"] == pytest.approx(1.0) and not same["drift"] and same["psi"] == pytest.approx(0)
    one = max(counts, key=counts.get)
    assert category_drift(counts, {one: 100}, alpha=0.01)["drift"]
    # the same modest shift of the mix: noise on a small night, drift on a big one
    shares = {k: 0.9 * v / total + (0.1 if k == one else 0.0) for k, v in counts.items()}
    small = category_drift(counts, _counts(shares, 40), alpha=0.01)
    big = category_drift(counts, _counts(shares, 20_000), alpha=0.01)
    assert not small["drift"] and big["drift"], (small["p_value"], big["p_value"])
    assert big["psi"] == pytest.approx(small["psi"], rel=0.5)  # PSI alone cannot tell them apart
    assert big["largest_shifts"][0]["category"] == one


def test_confidence_drift(reference):
    _, conf = reference
    same = confidence_drift(conf, conf, alpha=0.01)
    assert same["statistic"] == 0 and not same["drift"]
    lower = confidence_drift(conf, conf ** 4, alpha=0.01)  # a night the model is much less sure of
    assert lower["drift"] and lower["p_value"] < 1e-6 and lower["psi"] > 0.1
    assert confidence_drift(conf, conf[:1], alpha=0.01)["note"]  # too few to test: no flag, says so


def test_psi_is_zero_for_identical_and_positive_otherwise():
    a = np.array([0.2, 0.3, 0.5])
    assert psi(a, a) == pytest.approx(0)
    assert psi(a, np.array([0.5, 0.3, 0.2])) > 0
