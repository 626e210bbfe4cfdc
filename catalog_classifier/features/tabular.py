"""Brand, shop domain and price as meta features.

Brand and domain are high-cardinality: they become LightGBM categorical codes for values
seen at least ``min_count`` times in training (LightGBM's advice for such columns is
native categorical handling with smoothing), plus their training frequency. Unknown
brands at serving time are simply "unknown" (NaN), never an error.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .text import normalize_text

FEATURES = ["brand", "domain", "brand_freq", "log_price", "has_image", "title_len", "desc_len"]
CATEGORICAL = [0, 1]


def norm_key(v) -> str | None:
    """The key a brand or domain is known by (None = unknown); shared with the brand prior."""
    s = normalize_text(v)
    return s or None


class TabularEncoder:
    def __init__(self, min_count: int = 2):
        self.min_count = min_count

    def fit(self, items: pd.DataFrame) -> "TabularEncoder":
        self.brand_codes_ = self._codes(items["brand"])
        self.domain_codes_ = self._codes(items["domain"])
        brands = items["brand"].map(norm_key).dropna()
        self.brand_freq_ = (brands.value_counts() / max(len(items), 1)).to_dict()
        return self

    def _codes(self, col: pd.Series) -> dict[str, int]:
        counts = col.map(norm_key).dropna().value_counts()
        keep = sorted(counts[counts >= self.min_count].index)
        return {k: i for i, k in enumerate(keep)}

    def transform(self, items: pd.DataFrame, has_image: np.ndarray | None = None) -> np.ndarray:
        brand = [norm_key(v) for v in items["brand"]]
        domain = [norm_key(v) for v in items["domain"]]
        price = pd.to_numeric(items["price"], errors="coerce").to_numpy(dtype=np.float64)
        price = np.where((price > 0) & np.isfinite(price), price, np.nan)
        img = np.ones(len(items)) if has_image is None else np.asarray(has_image, dtype=np.float64)
        cols = [
            _lookup(brand, self.brand_codes_, np.nan),
            _lookup(domain, self.domain_codes_, np.nan),
            _lookup(brand, self.brand_freq_, 0.0),
            np.log1p(price),
            img,
            items["title"].fillna("").str.len().to_numpy(dtype=np.float64),
            items["description"].fillna("").str.len().to_numpy(dtype=np.float64),
        ]
        return np.stack(cols, axis=1)

    def to_dict(self) -> dict:
        return {"min_count": self.min_count, "brand_codes": self.brand_codes_,
                "domain_codes": self.domain_codes_, "brand_freq": self.brand_freq_}

    @classmethod
    def from_dict(cls, d: dict) -> "TabularEncoder":
        self = cls(d["min_count"])
        self.brand_codes_, self.domain_codes_ = d["brand_codes"], d["domain_codes"]
        self.brand_freq_ = d["brand_freq"]
        return self


def _lookup(keys: list, table: dict, missing: float) -> np.ndarray:
    """``table[key]`` per key as float64, ``missing`` for unknown keys and None."""
    get = table.get
    return np.array([missing if k is None else get(k, missing) for k in keys], dtype=np.float64)
