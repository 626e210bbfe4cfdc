"""What every base model shares: the scikit-learn estimator contract plus save / load.

Parameters are flat and stored as given in ``__init__`` (``get_params`` / ``clone`` work);
everything learned ends in ``_`` and is set in ``fit``. ``classes`` (optional) is the full
label set: a model fitted on a fold that lacks a class still returns a column for it, so
``predict_proba`` columns always follow ``classes_``. ``save(dir)`` writes ``params.json``
(exactly ``get_params()``) next to the fitted state; ``load(dir)`` rebuilds from both.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

PARAMS_FILE = "params.json"


class BaseModel(ClassifierMixin, BaseEstimator):
    # the ItemInputs fields predict_proba reads (None: not declared). A model that reads no
    # embeddings gives an item the same row for the same text, title and brand, so a loaded
    # model version serves it from the content cache (catalog_classifier/base_cache.py)
    reads: tuple[str, ...] | None = None

    def _encode_labels(self, y) -> np.ndarray:
        """Set ``classes_`` and return ``y`` as column indices into it."""
        y = np.asarray(y)
        self.classes_ = np.unique(y) if self.classes is None else np.asarray(self.classes)
        idx = np.searchsorted(self.classes_, y)
        if len(y) and ((idx >= len(self.classes_)) | (self.classes_[np.minimum(idx, len(self.classes_) - 1)] != y)).any():
            raise ValueError(f"{type(self).__name__}: labels outside classes={list(self.classes_)}")
        return idx.astype(np.int64)

    def predict(self, X) -> np.ndarray:
        """Most probable class; a row the model cannot score (all NaN) gets ``classes_[0]``."""
        p = np.nan_to_num(self.predict_proba(X), nan=-1.0)
        return self.classes_[p.argmax(1)]

    # ---- persistence: params.json + the model's own fitted state
    def save(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        params = self.get_params()
        tuples = [k for k, v in params.items() if isinstance(v, tuple)]
        (path / PARAMS_FILE).write_text(json.dumps({"params": params, "tuples": tuples},
                                                   default=_json_default, ensure_ascii=False))
        self._save_fitted(path)

    @classmethod
    def load(cls, path):
        path = Path(path)
        d = json.loads((path / PARAMS_FILE).read_text())
        params = {k: (tuple(v) if k in d["tuples"] else v) for k, v in d["params"].items()}
        self = cls(**params)
        self._load_fitted(path)
        return self

    def _save_fitted(self, path: Path) -> None:
        raise NotImplementedError

    def _load_fitted(self, path: Path) -> None:
        raise NotImplementedError


def _json_default(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"parameter value {v!r} cannot be saved as JSON")
