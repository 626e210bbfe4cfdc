"""Per-class confidence thresholds chosen to reach a target precision.

Chosen on out-of-fold (held-out) calibrated probabilities. A threshold selected on the
same scores it is judged on is optimistic, so the precision estimate can be replaced by a
one-sided Wilson lower bound (``confidence`` > 0); classes whose predictions never reach
the target with ``min_support`` accepted items get ``inf`` (everything goes to review).

A class with a hundred predictions has a jagged precision curve: one error near the top
can push its threshold far up. ``shrinkage`` = m > 0 adds m pseudo-items to every point
of a class's curve, at the precision all classes together reach above the same
confidence (empirical-Bayes shrinkage toward the global curve): small classes lean on the
global curve, large classes keep their own.

``scope`` (point mode): ``per_class`` chooses every class's threshold on its own curve;
``pooled`` (the default) starts every class at the one threshold all classes' rows pooled
reach the target at, raises a class to its own threshold (``per_class``'s, or ``inf``) where
its own rows above the pooled threshold fall short of the target, and lowers it to its own
where its own curve reaches the target lower down (a large class with a well-estimated
curve keeps what ``per_class`` gives it). Per class, the
curve of a few dozen rows can only pass 0.98 by being error-free, so ``per_class`` is far
more conservative than its target: on Flipkart level 2 (2 nested outer folds, 410 held-out
items) it accepted 60.9% at a measured 0.996 against ``pooled``'s 71.9% at 0.983, level 3
46.0% at 0.995 against 67.1% at 0.982.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import beta, norm

THRESHOLD_METHODS = ("point", "guaranteed")
THRESHOLD_SCOPES = ("pooled", "per_class")


def wilson_lower(correct: np.ndarray, total: np.ndarray, confidence: float) -> np.ndarray:
    correct = np.asarray(correct, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    p = np.divide(correct, total, out=np.zeros_like(correct), where=total > 0)
    if confidence <= 0:
        return p
    z = norm.ppf(confidence)
    denom = 1 + z * z / total
    centre = p + z * z / (2 * total)
    margin = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return (centre - margin) / denom


def precision_curve(conf: np.ndarray, correct: np.ndarray):
    """``at(values)``: the precision of the rows whose ``conf`` is >= each value (the pooled
    curve a group's own curve is shrunk toward)."""
    conf = np.asarray(conf, dtype=np.float64)
    order = np.argsort(-conf, kind="stable")
    s_conf = conf[order]
    prec = np.cumsum(np.asarray(correct, dtype=np.float64)[order]) / np.arange(1, len(conf) + 1)

    def at(values: np.ndarray) -> np.ndarray:
        if not len(prec):
            return np.zeros(len(np.atleast_1d(values)))
        # index of the last row with confidence >= t (s_conf is descending)
        last = np.searchsorted(-s_conf, -np.asarray(values), side="right") - 1
        return prec[np.clip(last, 0, len(prec) - 1)]

    return at


def global_precision(y_true: np.ndarray, proba: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Precision of all rows (any predicted class) whose confidence is >= each value of ``at``."""
    return precision_curve(proba.max(1), proba.argmax(1) == np.asarray(y_true))(at)


def clopper_pearson_lower(correct: np.ndarray, total: np.ndarray, delta: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound (level 1 - delta) of a binomial proportion."""
    correct = np.asarray(correct, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lo = beta.ppf(delta, correct, total - correct + 1)
    return np.where(correct > 0, np.nan_to_num(lo), 0.0)


def clopper_pearson_interval(correct: int, total: int, delta: float) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval (level 1 - delta) of a binomial proportion."""
    if total <= 0:
        return 0.0, 1.0
    lo = 0.0 if correct == 0 else float(beta.ppf(delta / 2, correct, total - correct + 1))
    hi = 1.0 if correct == total else float(beta.ppf(1 - delta / 2, correct + 1, total - correct))
    return lo, hi


def lowest_threshold(conf: np.ndarray, correct: np.ndarray, target: float, min_support: int = 10,
                     confidence: float = 0.0, prior=None, shrinkage: float = 0.0,
                     method: str = "point", delta: float = 0.05, accepted: tuple[float, int] = (0, 0),
                     batch_ratio: float = 0.0) -> float:
    """The lowest confidence threshold whose accepted set (rows with ``conf`` >= it) reaches
    ``target`` precision, ``inf`` when none does. The one rule behind every threshold.

    Cuts fall only between distinct confidence values and keep at least ``min_support`` rows.
    ``accepted`` = (correct, total) of rows accepted before (the climb's deeper steps): every
    cut's set is judged together with them, so the target holds for everything accepted.

    ``point``: the precision of the accepted set (or its Wilson lower bound at ``confidence``;
    ``prior(sorted_conf)``, the precision all classes reach above each cut, adds ``shrinkage``
    pseudo-items) must reach the target; the lowest such cut wins, wherever it lies.

    ``guaranteed`` (Learn-then-Test, fixed-sequence testing): cuts are tested from the highest
    confidence down; a cut passes when the one-sided Clopper-Pearson lower bound of its
    precision is >= the bar, and lowering stops at the first failure (``_fixed_sequence``).
    The sequence starts at the first cut where an error-free set would pass (at least
    ``min_support`` rows).

    - ``batch_ratio`` = 0: the bar is ``target``, the bound at level 1 - ``delta``. Guaranteed,
      for exchangeable new rows: the *expected* precision of the accepted set is >= target with
      probability >= 1 - delta. A batch of new items measured on its own (a night, a held-out
      fold) still falls below the target about half the time when that precision sits just
      above it.
    - ``batch_ratio`` = r > 0: the guarantee covers the *measured* precision of a batch of new
      items r times the size of these rows (accepting about r x the cut's rows): ``delta`` is
      split, half for the bound, half for the batch's own sampling; the bar is the lowest true
      precision at which such a batch measures below the target with probability <= delta/2
      (``batch_floor``). Union bound: the batch measures >= target with probability
      >= 1 - delta. The bar is steep for the top cuts' small batches, so the bound's half runs
      three sequences (``START_RATES``) at a third of it each.

    Not guaranteed: the same jointly for all classes and nodes (each holds its own 1 - delta),
    nor under drift. Shrinkage and ``confidence`` are point-estimate devices, not used here.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {', '.join(THRESHOLD_METHODS)}, got {method!r}")
    conf = np.asarray(conf, dtype=np.float64)
    if len(conf) < max(min_support, 1):
        return np.inf
    order = np.argsort(-conf, kind="stable")
    s_conf = conf[order]
    ok = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    total = np.arange(1, len(s_conf) + 1, dtype=np.float64)
    own = total  # the group's own rows above each cut (min_support counts these)
    ok, total = ok + accepted[0], total + accepted[1]
    last_of_tie = np.r_[s_conf[1:] != s_conf[:-1], True]
    if method == "guaranteed":
        if batch_ratio <= 0:
            return _fixed_sequence(s_conf, ok, total, own, last_of_tie, np.full(len(total), target),
                                   (0.0,), accepted, min_support, delta)
        bar = np.maximum(target, batch_floor(batch_ratio * total, target, delta / 2))
        return _fixed_sequence(s_conf, ok, total, own, last_of_tie, bar, START_RATES, accepted,
                               min_support, delta / 2)
    if shrinkage > 0 and prior is not None:
        ok = ok + shrinkage * prior(s_conf)
    prec = wilson_lower(ok, total + shrinkage, confidence)
    good = (prec >= target) & (own >= min_support) & last_of_tie
    if not good.any():
        return np.inf
    return float(s_conf[np.flatnonzero(good).max()])  # largest accepted set = lowest threshold


START_RATES = (0.0, 0.25, 0.5)  # batch mode: error rates (share of the allowed) the sequences start at


def _fixed_sequence(s_conf, ok, total, own, last_of_tie, bar, start_rates, accepted, min_support,
                    delta) -> float:
    """Fixed-sequence tests (``lowest_threshold``'s guarantee): from each start, cuts are tested
    downward (Clopper-Pearson lower bound of the accepted set >= ``bar``) until the first
    failure; the lowest passing cut of all sequences wins. A sequence starts (labels unseen)
    at the first cut where a set with that share of the allowed error rate would pass: an
    error-free start asks the top rows to be nearly perfect, which a small batch's steep bar
    makes fragile; later starts risk starting below the best cut. With several starts the risk
    is split over them (Bonferroni), so the lowest cut of all holds at ``delta``."""
    d = delta / len(start_rates)
    lower = clopper_pearson_lower(ok, total, d)
    best = np.inf
    for rate in start_rates:
        assumed = own * (1 - rate * (1 - bar)) + accepted[0]
        started = np.maximum.accumulate(clopper_pearson_lower(assumed, total, d) >= bar)
        cuts = np.flatnonzero(last_of_tie & (own >= min_support) & started)
        if not len(cuts):
            continue
        fails = lower[cuts] < bar[cuts]
        if fails[0]:
            continue
        n_pass = int(np.argmax(fails)) if fails.any() else len(cuts)
        best = min(best, float(s_conf[cuts[n_pass - 1]]))
    return best


def batch_floor(m: np.ndarray, target: float, delta: float) -> np.ndarray:
    """The lowest true precision p at which a batch of ``m`` accepted items (rounded, >= 1)
    measures below ``target`` with probability <= ``delta``: with k = ceil(target m) - 1 the
    most correct items that still fall short, P(Binomial(m, p) <= k) = I_{1-p}(m - k, k + 1)
    <= delta, i.e. p >= 1 - Beta.ppf(delta; m - k, k + 1)."""
    m = np.maximum(np.round(np.asarray(m, dtype=np.float64)), 1.0)
    k = np.ceil(target * m - 1e-9) - 1
    with np.errstate(invalid="ignore"):
        floor = 1.0 - beta.ppf(delta, m - k, np.maximum(k, 0) + 1)
    return np.where(k < 0, 0.0, floor)


def batch_ratio(params, n_rows: int) -> float:
    """The guarantee batch's size relative to the ``n_rows`` thresholds are chosen on:
    ``risk_batch`` items, or (None) one cross-validation fold of them (1 / ``n_folds``)."""
    b = params.risk_batch
    if b is None:
        return 1.0 / params.n_folds
    return float(b) / max(n_rows, 1)


def select_thresholds(
    y_true: np.ndarray,
    proba: np.ndarray,
    target_precision: float,
    min_support: int = 10,
    confidence: float = 0.0,
    shrinkage: float = 0.0,
    method: str = "point",
    delta: float = 0.05,
    scope: str = "pooled",
    batch_ratio: float = 0.0,
) -> np.ndarray:
    """Lowest threshold per predicted class whose accepted set reaches the target (see the
    module docstring for ``scope``).

    ``guaranteed``: one threshold for all classes, tested on all rows pooled. A finite-sample
    bound needs many rows (an error-free set needs 149 of them to pass 0.98 at delta 0.05), so
    per class it would accept nothing in a catalog of a few thousand items; pooled, the bound
    covers the accepted set as a whole (its precision, not every class's). ``batch_ratio``:
    see ``lowest_threshold``.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    n_classes = proba.shape[1]
    pred = proba.argmax(1)
    conf = proba.max(1)
    if method == "guaranteed":
        t = lowest_threshold(conf, pred == y_true, target_precision, min_support, method=method, delta=delta,
                             batch_ratio=batch_ratio)
        return np.full(n_classes, t)
    if scope not in THRESHOLD_SCOPES:
        raise ValueError(f"threshold scope must be one of {', '.join(THRESHOLD_SCOPES)}, got {scope!r}")
    thresholds = np.full(n_classes, np.inf)
    prior = lambda at: global_precision(y_true, proba, at)  # noqa: E731
    for c in range(n_classes):
        m = pred == c
        thresholds[c] = lowest_threshold(conf[m], y_true[m] == c, target_precision, min_support,
                                         confidence, prior, shrinkage, method, delta)
    if scope == "per_class":
        return thresholds
    pooled = lowest_threshold(conf, pred == y_true, target_precision, min_support, confidence)
    above = conf >= pooled
    n_above = np.bincount(pred[above], minlength=n_classes)
    ok_above = np.bincount(pred[above], weights=(pred == y_true)[above], minlength=n_classes)
    short = (n_above > 0) & (ok_above < target_precision * n_above)
    never = np.bincount(pred, minlength=n_classes) == 0  # no evidence at all: never auto-accepted
    return np.where(never, np.inf, np.where(short, np.maximum(thresholds, pooled), np.minimum(thresholds, pooled)))


def select_for(params, y_true: np.ndarray, proba: np.ndarray, target_precision: float,
               method: str | None = None, delta: float | None = None) -> np.ndarray:
    """``select_thresholds`` with a ``StackParams``'s threshold settings (the one place they are read);
    ``method`` / ``delta`` override the params' ``threshold_method`` / ``risk_delta``."""
    p = params
    return select_thresholds(y_true, proba, target_precision, p.min_support, p.precision_confidence,
                             p.precision_shrinkage, method or p.threshold_method,
                             p.risk_delta if delta is None else delta, p.threshold_scope,
                             batch_ratio(p, len(y_true)))


def route(proba: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted class, confidence, accepted mask)."""
    pred = proba.argmax(1)
    conf = proba.max(1)
    return pred, conf, conf >= thresholds[pred]
