"""The generic stacked classifier: out-of-fold base predictions -> LightGBM meta ->
temperature scaling -> per-class thresholds. Knows nothing about catalogs.

Base models are scikit-learn classifiers (``get_params``, ``fit(X, y)`` -> self,
``predict_proba`` with columns in ``classes_``; NaN rows mean "cannot score this row").
Each fold and the final refit get a ``clone``; an estimator with a ``classes`` parameter is
told the full label set. To be saved and loaded, a base model also has ``save(dir)`` and a
classmethod ``load(dir)``, and ``load`` re-creates only classes the caller allows.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import lightgbm as lgb
import numpy as np

from .calibration import apply_temperature, fit_temperature
from .folds import fold_indices, make_folds
from .lgbm import balanced_weights, class_boosters, lgbm_params, raw_scores, train_meta
from .meta_features import Passthrough, build_meta_matrix
from .oof import fit_clone, out_of_fold_proba
from .pool import LogPool
from .rerank import CandidateReranker
from .subset import take
from .thresholds import THRESHOLD_METHODS, THRESHOLD_SCOPES, select_for


@dataclass
class StackParams:
    n_folds: int = 5
    seed: int = 13
    # above this many classes only compact per-model summaries (top-1, margin, entropy, argmax)
    max_classes_full_probas: int = 40
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 10
    num_boost_round: int = 400
    early_stopping_rounds: int = 30
    class_weight: str | None = "balanced"
    target_precision: float = 0.95
    min_support: int = 10
    # one-sided confidence for the precision lower bound used when choosing thresholds (0 = plain)
    precision_confidence: float = 0.0
    # pseudo-items pulling each class's precision curve toward all classes' curve (0 = off)
    precision_shrinkage: float = 0.0
    # start the trees from a log-opinion pool of the base models (see stacking/pool.py)
    boost_from_pool: bool = True
    # "point": the precision estimate reaches the target; "guaranteed": Learn-then-Test with a
    # Clopper-Pearson bound, precision >= target with probability >= 1 - risk_delta per test
    # (stacking/thresholds.lowest_threshold; a climbing caller passes its per-stage share,
    # stacking.hierarchy.stage_delta)
    threshold_method: str = "point"
    risk_delta: float = 0.05
    # guarantee mode: the batch of new items whose *measured* precision the bound covers (a
    # night, an audit sample, a held-out fold): that many items, None = one cross-validation
    # fold of the rows the thresholds are chosen on, 0 = the expected precision only
    # (stacking/thresholds.lowest_threshold)
    risk_batch: int | None = None
    # point mode: "pooled" (one threshold for all classes, raised for a class whose own rows fall
    # short of the target there) or "per_class" (stacking/thresholds.py)
    threshold_scope: str = "pooled"

    # above this many classes the meta is the top-K candidate re-ranker (stacking/rerank.py):
    # its cost grows with rows x rerank_top_k, not rows x classes
    max_classes_multiclass: int = 100
    rerank_top_k: int = 10
    rerank_tokens: bool = False  # the item's title-token counts on every candidate row

    def __post_init__(self):
        if self.threshold_method not in THRESHOLD_METHODS:
            raise ValueError(f"stack.threshold_method must be one of {', '.join(THRESHOLD_METHODS)}, "
                             f"got {self.threshold_method!r}")
        if self.threshold_scope not in THRESHOLD_SCOPES:
            raise ValueError(f"stack.threshold_scope must be one of {', '.join(THRESHOLD_SCOPES)}, "
                             f"got {self.threshold_scope!r}")
        if not 0 < self.risk_delta < 1:
            raise ValueError(f"stack.risk_delta must be in (0, 1), got {self.risk_delta!r}")
        if self.risk_batch is not None and (isinstance(self.risk_batch, bool) or not isinstance(self.risk_batch, int)
                                            or self.risk_batch < 0):
            raise ValueError(f"stack.risk_batch must be a whole number >= 0 or null, got {self.risk_batch!r}")


class StackedClassifier:
    """``estimators``: name -> unfitted base model (a template: never fitted itself).
    ``num_threads``: LightGBM threads (None: LightGBM's default).
    ``phase(name, model=...)``: the caller's timing hook, a context manager around each base
    model's fit ("fit.base") and predict ("predict.base")."""

    def __init__(self, estimators: dict[str, Any], params: StackParams | None = None,
                 progress: Callable[[str], None] | None = None, num_threads: int | None = None,
                 phase: Callable[..., Any] | None = None):
        self.estimators = estimators
        self.params = params or StackParams()
        self.progress = progress or (lambda msg: None)
        self.num_threads = num_threads
        self.phase = phase or _no_phase

    # ------------------------------------------------------------------ fit
    def fit(self, X, y: np.ndarray, n_classes: int, groups: np.ndarray | None = None,
            passthrough: Passthrough | None = None, fold: np.ndarray | None = None) -> "StackedClassifier":
        p = self.params
        y = np.asarray(y, dtype=np.int64)
        self.n_classes_ = n_classes
        self.fold_ = make_folds(y, p.n_folds, p.seed, groups) if fold is None else np.asarray(fold)
        k_folds = len(np.unique(self.fold_))
        # 1. out-of-fold base predictions, then each base refit on all rows
        self.base_oof_: dict[str, np.ndarray] = {}
        self.base_models_: dict[str, Any] = {}
        for name, est in self.estimators.items():
            with self.phase("fit.base", model=name):
                self.progress(f"{name}: out-of-fold ({k_folds} folds)")
                self.base_oof_[name] = out_of_fold_proba(est, X, y, self.fold_, n_classes, self.progress)
                self.progress(f"{name}: refit on all {len(y)} rows")
                self.base_models_[name] = fit_clone(est, X, y, n_classes)
        oof_logits = self._fit_meta(y, passthrough)
        self._calibrate(oof_logits, y)
        return self

    def _fit_meta(self, y: np.ndarray, passthrough: Passthrough | None) -> np.ndarray:
        """Steps 2-4: the meta-classifier out of fold, then on all rows; its out-of-fold logits."""
        p, n_classes = self.params, self.n_classes_
        self.reranker_ = None
        if n_classes > p.max_classes_multiclass:  # many classes: cost rows x K, not rows x classes
            self.reranker_ = CandidateReranker.from_params(p, self.num_threads)
            oof_logits = self.reranker_.fit_oof(self.base_oof_, y, self.fold_, passthrough,
                                                _early_stopping_split, self.progress)
            self.booster_, self.pool_, self.num_rounds_ = None, None, self.reranker_.num_rounds_
            self.feature_names_, self.categorical_ = self.reranker_.feature_names_, self.reranker_.categorical_
            return oof_logits
        # 2. meta features built only from out-of-fold probabilities
        F, self.feature_names_, self.categorical_ = build_meta_matrix(
            self.base_oof_, passthrough, p.max_classes_full_probas)
        w = balanced_weights(y, n_classes) if p.class_weight == "balanced" else None
        self.lgb_params_ = lgbm_params(n_classes, p.learning_rate, p.num_leaves, p.min_data_in_leaf, p.seed,
                                       self.num_threads)
        # 3. out-of-fold meta predictions (early stopping on another fold) -> calibration data.
        #    The pool the trees start from is itself fitted on the fold's training rows only.
        self.progress("meta: out-of-fold LightGBM")
        oof_logits = np.zeros((len(y), n_classes))
        folds = np.unique(self.fold_)
        best_iters = []
        for i, k in enumerate(folds):
            train_idx, test_idx = fold_indices(self.fold_, k)
            fit_idx, val_idx = _early_stopping_split(train_idx, y, p.seed + i)
            _, init = self._init_scores(y, train_idx, (fit_idx, val_idx, test_idx))
            booster = train_meta(
                F[fit_idx], y[fit_idx], self.feature_names_, self.categorical_, self.lgb_params_,
                p.num_boost_round, None if w is None else w[fit_idx],
                F[val_idx], y[val_idx], None if w is None else w[val_idx], p.early_stopping_rounds,
                init=init[0], init_valid=init[1])
            best_iters.append(max(booster.best_iteration, 1))
            oof_logits[test_idx] = raw_scores(booster, F[test_idx], booster.best_iteration or None)
            if init[2] is not None:
                oof_logits[test_idx] += init[2]
        # 4. final meta on all rows, rounds scaled up for the larger training set
        self.num_rounds_ = int(np.ceil(np.median(best_iters) * 1.2))
        self.num_rounds_ = min(self.num_rounds_, p.num_boost_round)
        self.progress(f"meta: final LightGBM, {self.num_rounds_} rounds")
        all_idx = np.arange(len(y))
        self.pool_, (init_all,) = self._init_scores(y, all_idx, (all_idx,))
        self.booster_ = train_meta(F, y, self.feature_names_, self.categorical_, self.lgb_params_,
                                   self.num_rounds_, w, init=init_all)
        return oof_logits

    def _calibrate(self, oof_logits: np.ndarray, y: np.ndarray) -> None:
        # 5. calibration and thresholds, both on held-out (out-of-fold) meta scores
        self.temperature_ = fit_temperature(oof_logits, y)
        self.oof_proba_ = apply_temperature(oof_logits, self.temperature_)
        self.y_ = y
        self.threshold_rows_ = np.ones(len(y), dtype=bool)
        self.thresholds_ = self._select(self.params.target_precision)

    def without(self, names: Iterable[str], passthrough: Passthrough | None = None) -> "StackedClassifier":
        """A new fitted stack without the base models ``names``: the kept base models (shared,
        not copied) and their out-of-fold predictions are reused, only the meta layer is
        re-fitted on the same folds. ``passthrough``: the training rows' features, as given to
        ``fit``. Used for ablations (what each base model adds)."""
        if not hasattr(self, "base_oof_"):
            raise ValueError("without() needs the out-of-fold base predictions of fit(); a loaded stack has none")
        drop = set(names)
        unknown = drop - set(self.base_models_)
        if unknown:
            raise ValueError(f"no base model named {sorted(unknown)}; the stack has {list(self.base_models_)}")
        if not set(self.base_models_) - drop:
            raise ValueError("a stack needs at least one base model")
        keep = [n for n in self.base_models_ if n not in drop]
        new = StackedClassifier({n: self.estimators[n] for n in keep if n in self.estimators},
                                replace(self.params), self.progress, self.num_threads, self.phase)
        new.n_classes_, new.fold_ = self.n_classes_, self.fold_
        new.base_oof_ = {n: self.base_oof_[n] for n in keep}
        new.base_models_ = {n: self.base_models_[n] for n in keep}
        new._calibrate(new._fit_meta(self.y_, passthrough), self.y_)
        return new

    def _select(self, target: float) -> np.ndarray:
        m = self.threshold_rows_
        p = self.params
        return select_for(p, self.y_[m], self.oof_proba_[m], target)

    def set_threshold_rows(self, rows: np.ndarray) -> np.ndarray:
        """Choose thresholds on these training rows only (e.g. those no rule will route:
        the model never decides the others, so they must not set its thresholds)."""
        self.threshold_rows_ = np.asarray(rows, dtype=bool)
        self.thresholds_ = self._select(self.params.target_precision)
        return self.thresholds_

    def rescore(self, oof_proba: np.ndarray) -> np.ndarray:
        """Route on other out-of-fold probabilities of the same rows: a caller that refines the
        stack's output (stacks at ancestor depths, ``stacking.hierarchy.refine_top_down``)
        must choose thresholds on the refined scores it will route. Re-chooses the thresholds."""
        oof_proba = np.asarray(oof_proba, dtype=np.float64)
        if oof_proba.shape != self.oof_proba_.shape:
            raise ValueError(f"rescore needs {self.oof_proba_.shape} probabilities, got {oof_proba.shape}")
        self.oof_proba_ = oof_proba
        self.thresholds_ = self._select(self.params.target_precision)
        return self.thresholds_

    def _init_scores(self, y, fit_rows, parts) -> tuple[LogPool | None, list]:
        """Pool fitted on ``fit_rows`` (out-of-fold probabilities) and its logits for each part
        (no pool and ``None`` logits when ``boost_from_pool`` is off)."""
        if not self.params.boost_from_pool:
            return None, [None] * len(parts)
        pool = LogPool().fit(self.base_oof_, y, fit_rows)
        return pool, [pool.scores(self.base_oof_, idx) for idx in parts]

    def set_target_precision(self, target: float) -> np.ndarray:
        """Re-choose thresholds for another target on the stored out-of-fold scores."""
        self.thresholds_ = self._select(target)
        self.params.target_precision = target
        return self.thresholds_

    # ------------------------------------------------------------- predict
    def base_proba(self, X) -> dict[str, np.ndarray]:
        out = {}
        for name, m in self.base_models_.items():
            with self.phase("predict.base", model=name):
                out[name] = m.predict_proba(X)
        return out

    def predict_proba(self, X, passthrough: Passthrough | None = None,
                      base_proba: dict[str, np.ndarray] | None = None) -> np.ndarray:
        base = self.base_proba(X) if base_proba is None else base_proba
        if self.reranker_ is not None:
            return apply_temperature(self.reranker_.logits(base, passthrough), self.temperature_)
        F, _, _ = build_meta_matrix(base, passthrough, self.params.max_classes_full_probas)
        logits = raw_scores(self.booster_, F)
        if self.pool_ is not None:
            logits = logits + self.pool_.scores(base)
        return apply_temperature(logits, self.temperature_)

    def contributions(self, X, passthrough: Passthrough | None = None,
                      base_proba: dict[str, np.ndarray] | None = None,
                      classes: np.ndarray | None = None) -> np.ndarray:
        """Why each row scored its class: [n, n_features + 2], columns ``feature_names_`` then
        LightGBM's bias (expected value) then the pool's init score (0 without a pool).

        The row sums are the raw (pre-temperature) logits of ``classes`` (one class index per
        row; default the argmax). Each row walks only its class's trees (``class_boosters``:
        the same SHAP values as LightGBM's multiclass ``pred_contrib`` block of that class, at a
        ``n_classes``-th of the cost). With the re-ranker meta (many classes) the columns are the
        re-ranker's features and the row is always its best candidate: ``classes``, when given,
        must be that candidate's class.
        """
        base = self.base_proba(X) if base_proba is None else base_proba
        if self.reranker_ is not None:  # the re-ranker explains its best candidate (the argmax class)
            if classes is not None:
                best = self.reranker_.logits(base, passthrough).argmax(1)
                if not np.array_equal(np.asarray(classes, dtype=np.int64), best):
                    raise ValueError("the re-ranker explains each row's best class only; "
                                     "classes differs from it")
            contrib, _, start = self.reranker_.contributions(base, passthrough)
            return np.column_stack([contrib, start])
        F, _, _ = build_meta_matrix(base, passthrough, self.params.max_classes_full_probas)
        n, nf = F.shape[0], F.shape[1]
        pool = self.pool_.scores(base) if self.pool_ is not None else np.zeros((n, self.n_classes_))
        if classes is None:
            logits = raw_scores(self.booster_, F) + pool
            classes = logits.argmax(1)
        classes = np.asarray(classes, dtype=np.int64)
        booster, boosters = self.__dict__.get("_class_boosters", (None, None))
        if booster is not self.booster_:  # built once per fitted/loaded booster, never saved
            booster, boosters = self._class_boosters = self.booster_, class_boosters(self.booster_)
        contrib = np.zeros((n, nf + 1))
        F = F.tocsr()
        for c in np.unique(classes):
            rows = np.flatnonzero(classes == c)
            # dense input: LightGBM's pred_contrib of sparse input comes back sparse
            contrib[rows] = boosters[c].predict(F[rows].toarray(), pred_contrib=True)
        return np.column_stack([contrib, pool[np.arange(n), classes]])

    # ------------------------------------------------------------ save/load
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        bases = {}
        for name, model in self.base_models_.items():
            bases[name] = _qualified(type(model))
            model.save(path / "base" / name)
        if self.reranker_ is not None:
            self.reranker_.save(path / "rerank")
        else:
            self.booster_.save_model(str(path / "meta_lgbm.txt"))
        np.savez_compressed(path / "oof.npz", oof_proba=self.oof_proba_, y=self.y_, fold=self.fold_,
                            threshold_rows=self.threshold_rows_)
        state = {
            "params": self.params.__dict__, "bases": bases, "n_classes": self.n_classes_,
            "feature_names": self.feature_names_, "categorical": self.categorical_,
            "temperature": self.temperature_, "num_rounds": self.num_rounds_,
            "pool": None if self.pool_ is None else self.pool_.to_dict(),
            "thresholds": [None if not np.isfinite(t) else float(t) for t in self.thresholds_],
        }
        (path / "stack.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: str | Path, allowed: Iterable[type],
             phase: Callable[..., Any] | None = None) -> "StackedClassifier":
        """``allowed``: the base model classes this stack may re-create (nothing else is loaded)."""
        path = Path(path)
        state = json.loads((path / "stack.json").read_text())
        params = dict(state["params"])
        if "max_classes_full" in params:  # stacks saved before the field took the config's name
            params["max_classes_full_probas"] = params.pop("max_classes_full")
        self = cls({}, StackParams(**params), phase=phase)
        self.n_classes_ = state["n_classes"]
        self.feature_names_ = state["feature_names"]
        self.categorical_ = state["categorical"]
        self.temperature_ = state["temperature"]
        self.num_rounds_ = state["num_rounds"]
        self.pool_ = LogPool.from_dict(state.get("pool"))
        self.thresholds_ = np.array([np.inf if t is None else t for t in state["thresholds"]])
        rerank = path / "rerank"  # the many-class meta (stacks saved before it have none)
        self.reranker_ = CandidateReranker.load(rerank) if rerank.is_dir() else None
        self.booster_ = None if self.reranker_ is not None else lgb.Booster(model_file=str(path / "meta_lgbm.txt"))
        oof = np.load(path / "oof.npz")
        self.oof_proba_, self.y_, self.fold_ = oof["oof_proba"], oof["y"], oof["fold"]
        self.threshold_rows_ = oof["threshold_rows"] if "threshold_rows" in oof else np.ones(len(self.y_), bool)
        self.base_models_ = {}
        known = {_qualified(c): c for c in allowed}
        for name, qual in state["bases"].items():
            if qual not in known:
                raise ValueError(f"refusing to load base model {name!r}: class {qual} is not in the allowed list")
            self.base_models_[name] = known[qual].load(path / "base" / name)
        return self


def _no_phase(name: str, **info):
    return nullcontext()


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _early_stopping_split(idx: np.ndarray, y: np.ndarray, seed: int, share: float = 0.15):
    """Hold 15% of a fold's training rows out for early stopping (stratified when possible)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y[idx])
    n_present = int((counts > 0).sum())  # stratifying needs >= 2 per class and a class per held-out row
    strat = y[idx] if counts[counts > 0].min() >= 2 and int(len(idx) * share) >= n_present else None
    fit_idx, val_idx = train_test_split(idx, test_size=share, random_state=seed, stratify=strat)
    return np.sort(fit_idx), np.sort(val_idx)


__all__ = ["StackedClassifier", "StackParams", "Passthrough", "take"]
