"""Evaluation numbers checked by hand on tiny arrays, and the pictures written as real PNGs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from catalog_classifier.reporting import (
    classification_metrics, coverage_precision, expected_calibration_error, plot_confusion_matrix,
    plot_reliability_diagram, plot_risk_coverage, risk_coverage_curve,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# 5 items, 2 classes. Top class / confidence: 0/.9, 0/.8, 1/.8, 1/.75, 0/.6; item 3 is wrong.
Y = np.array([0, 0, 1, 0, 0])
P = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.25, 0.75], [0.6, 0.4]])


def assert_png(path, min_size=(100, 100)):
    data = path.read_bytes()
    assert len(data) > 0 and data[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        return im.size


def test_classification_metrics_by_hand():
    # confusion (rows true): a: a=1 b=1 | b: b=2 | c: a=1 ; d never seen nor predicted
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c", "d"])
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(0.6)
    per = {r["label"]: r for r in m["per_category"]}
    assert list(per) == ["a", "b", "c", "d"]
    assert (per["a"]["precision"], per["a"]["recall"], per["a"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (per["b"]["precision"], per["b"]["recall"], per["b"]["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (per["c"]["precision"], per["c"]["recall"], per["c"]["f1"]) == (0.0, 0.0, 0.0)
    assert [per[k]["support"] for k in "abcd"] == [2, 2, 1, 0]
    assert [per[k]["predicted"] for k in "abcd"] == [2, 3, 0, 0]
    # macro over a, b, c (d has no items and no predictions): (0.5 + 0.8 + 0) / 3
    assert m["macro_f1"] == pytest.approx(1.3 / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 * 2 + 0.8 * 2) / 5)


def test_classification_metrics_rejects_bad_input():
    with pytest.raises(ValueError):
        classification_metrics([0, 3], [0, 1], ["a", "b"])
    with pytest.raises(ValueError):
        classification_metrics([0, 1, 1], [0, 1], ["a", "b"])


def test_coverage_precision_by_hand():
    # threshold .7 for both: items 0-3 accepted, item 3 wrong -> coverage 4/5, precision 3/4
    assert coverage_precision(Y, P, np.array([0.7, 0.7])) == pytest.approx((0.8, 0.75))
    # >= is inclusive: .8 accepts items 0, 1, 2
    assert coverage_precision(Y, P, np.array([0.8, 0.8])) == pytest.approx((0.6, 1.0))
    # class 1 never accepted
    assert coverage_precision(Y, P, np.array([0.7, np.inf])) == pytest.approx((0.4, 1.0))
    # threshold 0 accepts everything: precision = accuracy
    assert coverage_precision(Y, P, np.zeros(2)) == pytest.approx((1.0, 0.8))


def test_inf_thresholds_accept_nothing():
    coverage, precision = coverage_precision(Y, P, np.full(2, np.inf))
    assert coverage == 0.0 and np.isnan(precision)
    certain = np.eye(2)[[0, 1, 0]]  # probability exactly 1 still below inf
    coverage, precision = coverage_precision([0, 1, 0], certain, [np.inf, np.inf])
    assert coverage == 0.0 and np.isnan(precision)
    with pytest.raises(ValueError):
        coverage_precision(Y, P, [0.5])


def test_risk_coverage_by_hand():
    coverage, risk = risk_coverage_curve(Y, P)
    # sorted confidences .9 | .8 .8 (tie: one point) | .75 (wrong) | .6
    np.testing.assert_allclose(coverage, [0.2, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.0, 0.25, 0.2])
    # the full-coverage point is the plain error rate
    assert risk[-1] == pytest.approx(1 - classification_metrics(Y, P.argmax(1), ["a", "b"])["accuracy"])


def test_ece_zero_when_calibrated_and_known_gap():
    # 10 items at confidence .8 with 8 right, 5 at confidence 1.0 all right
    proba = np.array([[0.8, 0.2]] * 10 + [[0.0, 1.0]] * 5)
    y = np.array([0] * 8 + [1] * 2 + [1] * 5)
    assert expected_calibration_error(y, proba) == pytest.approx(0.0, abs=1e-12)
    # all at .6 and all right: gap .4 everywhere
    assert expected_calibration_error([0] * 4, np.array([[0.6, 0.4]] * 4)) == pytest.approx(0.4)


def test_reliability_diagram_png_and_ece(tmp_path):
    rng = np.random.default_rng(0)
    n, c = 4000, 5
    proba = rng.dirichlet(np.ones(c) * 0.5, size=n)
    # draw labels from the probabilities themselves: calibrated by construction
    y = np.array([rng.choice(c, p=p) for p in proba])
    path = tmp_path / "rel" / "reliability.png"
    ece = plot_reliability_diagram(y, proba, path, n_bins=10)
    assert_png(path)
    assert ece == pytest.approx(expected_calibration_error(y, proba, n_bins=10))
    assert ece < 0.03
    overconfident = np.where(proba == proba.max(1, keepdims=True), 1.0, 0.0)
    assert plot_reliability_diagram(y, overconfident, tmp_path / "o.png") > 0.2


def test_confusion_matrix_png_small_and_100_labels(tmp_path):
    small = tmp_path / "cm_small.png"
    assert plot_confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"], small) == small
    w_small, _ = assert_png(small)
    rng = np.random.default_rng(1)
    labels = [f"Home Decor & Festive Needs > Very Long Sub Category Name {i}" for i in range(100)]
    y = rng.integers(0, 100, 3000)
    pred = np.where(rng.random(3000) < 0.7, y, rng.integers(0, 100, 3000))
    big = tmp_path / "cm_big.png"
    plot_confusion_matrix(y, pred, labels, big)
    w_big, h_big = assert_png(big)
    assert w_big > 2 * w_small and h_big > 1500  # the figure grew with the labels
    counts = tmp_path / "cm_counts.png"
    plot_confusion_matrix([0, 1, 1], [0, 1, 0], ["a", "b"], counts, normalize=False)
    assert_png(counts)


def test_risk_coverage_png(tmp_path):
    curves = {"stack": risk_coverage_curve(Y, P), "oracle": (np.array([0.5, 1.0]), np.array([0.0, 0.2]))}
    path = plot_risk_coverage(curves, tmp_path / "rc.png", target_points={"thresholds": (0.8, 0.25)})
    assert_png(path)
    assert_png(plot_risk_coverage(curves, tmp_path / "rc2.png"))
