"""Evaluation numbers and pictures, as plain functions over numpy arrays.

Conventions: ``y_true``/``y_pred`` are int class indices into ``labels``; ``proba`` is [n, C].
Pictures are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas): no pyplot, no display,
no global backend switch, nothing left open.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from stacking import route


# ---- numbers ---------------------------------------------------------------------------------------
def _labels_1d(y: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} must hold class indices in [0, {n_classes})")
    return y.astype(np.int64, copy=False)


def _proba(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2:
        raise ValueError(f"proba must be [n, C], got shape {proba.shape}")
    y = _labels_1d(y_true, proba.shape[1], "y_true")
    if y.shape[0] != proba.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} items, proba {proba.shape[0]}")
    return y, proba


def confusion_counts(y_true, y_pred, n_classes: int) -> np.ndarray:
    """[C, C] counts, rows = true class, columns = predicted class."""
    t = _labels_1d(y_true, n_classes, "y_true")
    p = _labels_1d(y_pred, n_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} items, y_pred {p.size}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(y_true, y_pred, labels: Sequence[str]) -> dict:
    """Accuracy, macro/weighted F1 and per-category precision/recall/F1/support.

    A category with no true and no predicted items has no defined F1 and is left out of the
    macro average (it still gets a row with zeros). Precision of a never-predicted category is 0.
    """
    cm = confusion_counts(y_true, y_pred, len(labels))
    n = int(cm.sum())
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (support > 0) | (predicted > 0)
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "weighted_f1": float((f1 * support).sum() / n) if n else float("nan"),
        "per_category": [
            {"label": lab, "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i]), "predicted": int(predicted[i])}
            for i, lab in enumerate(labels)
        ],
    }


def coverage_precision(y_true, proba, thresholds) -> tuple[float, float]:
    """Share of items auto-accepted, and the precision among them.

    An item is accepted when its top class's probability >= thresholds[top class]; np.inf means
    that class is never accepted. Precision is NaN when nothing is accepted.
    """
    y, proba = _proba(y_true, proba)
    thresholds = np.asarray(thresholds, dtype=float)
    if thresholds.shape != (proba.shape[1],):
        raise ValueError(f"thresholds must have length {proba.shape[1]}, got {thresholds.shape}")
    if y.size == 0:
        return 0.0, float("nan")
    top, _, accepted = route(proba, thresholds)
    if not accepted.any():
        return 0.0, float("nan")
    return float(accepted.mean()), float((top[accepted] == y[accepted]).mean())


def risk_coverage_curve(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """Accept items from most to least confident: coverage and error rate among the accepted.

    Items with equal confidence cannot be split by any threshold, so the curve has one point per
    distinct confidence value (at the end of each tie group), not one per item.
    """
    y, proba = _proba(y_true, proba)
    if y.size == 0:
        return np.zeros(0), np.zeros(0)
    top = proba.argmax(axis=1)
    conf = proba[np.arange(y.size), top]
    order = np.argsort(-conf, kind="stable")
    errors = np.cumsum(top[order] != y[order])
    conf_sorted = conf[order]
    ends = np.flatnonzero(np.r_[conf_sorted[1:] != conf_sorted[:-1], True])
    accepted = ends + 1
    return accepted / y.size, errors[ends] / accepted


def reliability_bins(y_true, proba, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin (lo, hi]: item count, accuracy and mean confidence."""
    y, proba = _proba(y_true, proba)
    top = proba.argmax(axis=1)
    conf = proba[np.arange(y.size), top]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    correct = np.bincount(b, weights=(top == y).astype(float), minlength=n_bins)
    conf_sum = np.bincount(b, weights=conf, minlength=n_bins)
    safe = np.maximum(count, 1)
    return {"edges": edges, "count": count, "accuracy": correct / safe, "confidence": conf_sum / safe}


def expected_calibration_error(y_true, proba, n_bins: int = 15) -> float:
    """ECE of the top-class confidence: sum over bins of share * |accuracy - confidence|."""
    bins = reliability_bins(y_true, proba, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return float("nan")
    gap = np.abs(bins["accuracy"] - bins["confidence"])
    return float((bins["count"] * gap).sum() / n)


# ---- pictures --------------------------------------------------------------------------------------
def _short(label: str, max_chars: int = 28) -> str:
    """Cut the middle of a long label, keeping its start and its (most specific) end."""
    if len(label) <= max_chars:
        return label
    head = (max_chars - 1) // 2
    return label[:head] + "…" + label[-(max_chars - 1 - head):]


def _save(fig: Figure, path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def plot_confusion_matrix(y_true, y_pred, labels: Sequence[str], path, normalize: bool = True) -> Path:
    """Confusion matrix as PNG; rows are true categories (normalised to sum 1 when ``normalize``).

    The figure grows with the number of labels and the font shrinks, so ~100 labels stay legible;
    cell values are written only while there is room (<= 25 labels).
    """
    n = len(labels)
    cm = confusion_counts(y_true, y_pred, n).astype(float)
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = float(np.clip(3.0 + 0.25 * n, 6.0, 40.0))  # inches; ~0.25 in (18 pt) per label
    font = float(np.clip(300.0 / max(n, 1), 6.0, 10.0))
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(cm.max(), 1.0),
                   interpolation="nearest", aspect="equal")
    names = [_short(str(lab)) for lab in labels]
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted", fontsize=font + 1)
    ax.set_ylabel("true", fontsize=font + 1)
    acc = float(np.trace(confusion_counts(y_true, y_pred, n))) / max(len(np.asarray(y_true)), 1)
    ax.set_title(f"Confusion matrix{' (row-normalised)' if normalize else ''}, accuracy {acc:.3f}",
                 fontsize=font + 2)
    if n <= 25:
        top = cm.max() if cm.size else 0.0
        for i in range(n):
            for j in range(n):
                if cm[i, j] > 0:
                    txt = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                    ax.text(j, i, txt, ha="center", va="center", fontsize=font - 1,
                            color="white" if cm[i, j] > 0.5 * top else "black")
    fig.colorbar(im, ax=ax, shrink=0.6)
    return _save(fig, path, dpi=110 if n <= 40 else 90)


def plot_risk_coverage(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path,
                       target_points: Mapping[str, tuple[float, float]] | None = None) -> Path:
    """Risk (error rate of accepted items) against coverage, one line per named curve.

    ``target_points`` maps a name to a (coverage, risk) point to mark, e.g. the operating point
    that the chosen per-class thresholds give.
    """
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for name, (coverage, risk) in curves.items():
        ax.plot(np.asarray(coverage), np.asarray(risk), label=name, linewidth=1.5)
    for name, (cov, risk) in (target_points or {}).items():
        ax.plot([cov], [risk], marker="o", linestyle="none", markersize=7, label=f"{name}")
        ax.annotate(f"{name}\ncov {cov:.2f}, risk {risk:.3f}", (cov, risk), fontsize=8,
                    textcoords="offset points", xytext=(6, 6))
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("coverage (share of items accepted automatically)")
    ax.set_ylabel("risk (error rate among accepted)")
    ax.set_title("Risk-coverage")
    ax.grid(True, alpha=0.3)
    if curves or target_points:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability_diagram(y_true, proba, path, n_bins: int = 15) -> float:
    """Reliability diagram (accuracy vs confidence per bin, item counts below) as PNG; returns ECE."""
    bins = reliability_bins(y_true, proba, n_bins)
    ece = expected_calibration_error(y_true, proba, n_bins)
    edges, count = bins["edges"], bins["count"]
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / n_bins
    used = count > 0
    fig = Figure(figsize=(6, 7), layout="constrained")
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.bar(centers[used], bins["accuracy"][used], width=width, edgecolor="black",
           alpha=0.7, label="accuracy")
    ax.plot(bins["confidence"][used], bins["accuracy"][used], "o", color="tab:red",
            markersize=4, label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy of top class")
    ax.set_title(f"Reliability ({n_bins} bins), ECE = {ece:.4f}")
    ax.legend(fontsize=8, loc="upper left")
    ax_count.bar(centers, count, width=width, edgecolor="black", color="tab:gray")
    ax_count.set_xlabel("confidence of top class")
    ax_count.set_ylabel("items")
    _save(fig, path)
    return ece
