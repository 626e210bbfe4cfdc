"""The row-aligned inputs base models see: normalised texts and image embeddings."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ItemInputs:
    texts: np.ndarray  # object array of normalised title+description strings
    titles: np.ndarray  # object array of normalised titles
    embeddings: np.ndarray | None = None  # float32 [n, d]; NaN rows = no usable image
    brands: np.ndarray | None = None  # object array of normalised brand names ("" = unknown)

    def take(self, idx: np.ndarray) -> "ItemInputs":
        return ItemInputs(self.texts[idx], self.titles[idx],
                          None if self.embeddings is None else self.embeddings[idx],
                          None if self.brands is None else self.brands[idx])

    def __len__(self) -> int:
        return len(self.texts)

    # rows as scikit-learn indexes them (``_safe_indexing`` calls ``X[idx, ...]``), so the
    # base models go through cross_val_predict and friends like an array would
    @property
    def shape(self) -> tuple[int]:
        return (len(self.texts),)

    def __getitem__(self, key) -> "ItemInputs":
        if isinstance(key, tuple):
            key = key[0]
        return self.take(np.arange(len(self))[key])
