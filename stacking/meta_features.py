"""Meta features: base-model probabilities (full, or compact summaries when classes are
many) next to passthrough features supplied by the caller."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass
class Passthrough:
    """Caller-built features that go straight to the meta-classifier.

    ``dense`` may hold NaN (missing); columns listed in ``categorical`` hold non-negative
    integer codes (NaN = unknown). ``sparse`` is e.g. token counts.
    """

    dense: np.ndarray | None = None
    dense_names: list[str] = field(default_factory=list)
    categorical: list[int] = field(default_factory=list)
    sparse: sp.csr_matrix | None = None
    sparse_names: list[str] = field(default_factory=list)

    def take(self, idx: np.ndarray) -> "Passthrough":
        return Passthrough(
            None if self.dense is None else self.dense[idx],
            self.dense_names,
            self.categorical,
            None if self.sparse is None else self.sparse.tocsr()[idx],
            self.sparse_names,
        )

    def __len__(self) -> int:
        if self.dense is not None:
            return self.dense.shape[0]
        return 0 if self.sparse is None else self.sparse.shape[0]


def summarize(p: np.ndarray) -> np.ndarray:
    """top-1 probability, margin to top-2, entropy, argmax (NaN rows stay NaN)."""
    p = np.asarray(p, dtype=np.float64)
    missing = np.isnan(p).any(1)
    q = np.where(missing[:, None], 0.0, p)
    srt = -np.sort(-q, axis=1)
    top1 = srt[:, 0]
    top2 = srt[:, 1] if q.shape[1] > 1 else np.zeros(len(q))
    ent = -(np.where(q > 0, q * np.log(np.clip(q, 1e-12, None)), 0.0)).sum(1)
    out = np.stack([top1, top1 - top2, ent, q.argmax(1).astype(np.float64)], axis=1)
    out[missing] = np.nan
    return out


def build_meta_matrix(
    base_proba: dict[str, np.ndarray],
    passthrough: Passthrough | None,
    max_classes_full: int,
) -> tuple[sp.csr_matrix, list[str], list[int]]:
    """Return (matrix, feature names, categorical feature indices)."""
    blocks, names, cats = [], [], []
    col = 0
    for name in sorted(base_proba):
        p = np.asarray(base_proba[name], dtype=np.float64)
        n_classes = p.shape[1]
        if n_classes <= max_classes_full:
            blocks.append(p)
            names += [f"{name}:p{c}" for c in range(n_classes)]
            col += n_classes
        s = summarize(p)
        blocks.append(s)
        names += [f"{name}:top1", f"{name}:margin", f"{name}:entropy", f"{name}:argmax"]
        cats.append(col + 3)
        col += 4
    dense = np.hstack(blocks) if blocks else np.zeros((len(passthrough), 0))
    mats = [sp.csr_matrix(dense)]
    if passthrough is not None:
        if passthrough.dense is not None and passthrough.dense.shape[1]:
            mats.append(sp.csr_matrix(np.asarray(passthrough.dense, dtype=np.float64)))
            names += list(passthrough.dense_names)
            cats += [col + c for c in passthrough.categorical]
            col += passthrough.dense.shape[1]
        if passthrough.sparse is not None and passthrough.sparse.shape[1]:
            mats.append(passthrough.sparse.tocsr().astype(np.float64))
            names += list(passthrough.sparse_names)
            col += passthrough.sparse.shape[1]
    return sp.hstack(mats, format="csr"), names, cats
