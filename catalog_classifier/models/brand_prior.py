"""Brand prior: smoothed P(category | brand) counted on the training rows.

In many catalogs a brand sells in one or two categories (BigBasket: most brands are all
"Beauty & Hygiene" or all "Gourmet & World Food"). LightGBM can split on brand as a
categorical, but with thousands of brands each split sees few of them; as a base model the
prior is produced out of fold like the others (target encoding without leakage) and enters
the log-opinion pool. Unknown or rare brands get a missing row (NaN), not a guess.
"""
from __future__ import annotations

import json

import numpy as np

from .base import BaseModel
from .registry import register


@register("brand_prior")
class BrandPrior(BaseModel):
    """NaN rows: brands seen fewer than ``min_count`` times in training (or never)."""

    reads = ("brands",)

    def __init__(self, alpha: float = 1.0, min_count: int = 2, classes=None):
        self.alpha = alpha
        self.min_count = min_count
        self.classes = classes

    def fit(self, X, y):
        if X.brands is None:
            raise ValueError("brand_prior needs item brands (ItemInputs.brands)")
        y = self._encode_labels(y)
        n_classes = len(self.classes_)
        self.class_prior_ = np.bincount(y, minlength=n_classes) / max(len(y), 1)
        counts: dict[str, np.ndarray] = {}
        for b, c in zip(X.brands, y):
            if b:
                counts.setdefault(b, np.zeros(n_classes))[c] += 1
        self.table_ = {b: v for b, v in counts.items() if v.sum() >= self.min_count}
        return self

    def predict_proba(self, X) -> np.ndarray:
        out = np.full((len(X), len(self.classes_)), np.nan, dtype=np.float32)
        brands = X.brands if X.brands is not None else [""] * len(X)
        for i, b in enumerate(brands):
            v = self.table_.get(b)
            if v is not None:
                out[i] = (v + self.alpha * self.class_prior_) / (v.sum() + self.alpha)
        return out

    def _save_fitted(self, path):
        (path / "brand_prior.json").write_text(json.dumps({
            "classes": self.classes_.tolist(), "class_prior": self.class_prior_.tolist(),
            "table": {b: v.tolist() for b, v in self.table_.items()}}, ensure_ascii=False))

    def _load_fitted(self, path):
        d = json.loads((path / "brand_prior.json").read_text())
        self.classes_, self.class_prior_ = np.array(d["classes"]), np.array(d["class_prior"])
        self.table_ = {b: np.array(v) for b, v in d["table"].items()}
