"""The text base models' probabilities, cached by item content: an unchanged item costs a lookup.

Crawled catalogs repeat most items from one night to the next, and a model version's text
models give the same probabilities for the same text, title and brand. For a model loaded from
its directory, every base model that reads no image (``BaseModel.reads``) is served from one
SQLite table (``features.cache_sqlite.EmbeddingCache``, WAL: several processes share it; rows
idle ``cache.max_idle_days`` are pruned):

    key   (sha256 of those models' saved files + library versions, sha256 of the item's
           normalised text, title and brand)
    value the models' probabilities for that item, side by side (float32, as they return them)

Only the rows missing there run through the models; the image model's costly part (the CNN)
has its own content cache. A model that is not loaded from a directory (one just fitted, an
evaluation fold) is never cached: it has no saved identity.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from catalog_classifier import events
from catalog_classifier.features.container import ItemInputs
from catalog_classifier.features.cache_sqlite import EmbeddingCache
from catalog_classifier.io_utils import folder_sha256s

FILENAME = "base_probas.sqlite"
_VERSION = "base-probas-v1"  # bump when what a row's key covers changes


def cached_models(stack) -> list[str]:
    """The stack's base models whose output depends on the item's text fields only."""
    return [n for n, m in stack.base_models_.items()
            if getattr(m, "reads", None) is not None and "embeddings" not in m.reads]


def stack_key(folder: Path, names: list[str], versions: dict) -> str:
    """Identity of the cached models: each one's saved files (content hashes) and the libraries."""
    h = hashlib.sha256(f"{_VERSION}\0{json.dumps(versions, sort_keys=True, default=str)}".encode())
    for name in names:
        for rel, sha in folder_sha256s(folder / "base" / name):
            h.update(f"\0{name}/{rel}\0{sha}".encode())
    return h.hexdigest()


def row_keys(X: ItemInputs) -> list[str]:
    """sha256 of each row's normalised text, title and brand (what a text model may read)."""
    brands = X.brands if X.brands is not None else [""] * len(X)
    return [hashlib.sha256("\0".join((str(t), str(ti), str(b))).encode("utf-8", "surrogatepass")).hexdigest()
            for t, ti, b in zip(X.texts, X.titles, brands)]


class BaseProbaCache:
    """One stack's cached text models (``names``), keyed by ``key`` (``stack_key``)."""

    def __init__(self, cache_dir: str, key: str, names: list[str], widths: list[int], max_idle_days: int = 0):
        self.names, self.widths = names, widths
        self.store = EmbeddingCache(cache_dir, key, dim=sum(widths), filename=FILENAME, max_idle_days=max_idle_days)
        self.last_stats = {"hits": 0, "misses": 0}

    def base_proba(self, stack, X: ItemInputs) -> dict[str, np.ndarray]:
        """``stack.base_proba(X)``: the cached models' rows from the table where present, every
        other row and model computed (one ``predict.base`` stage per model, as the stack's own)."""
        with events.stage("predict.base_cache"):
            keys = row_keys(X)
            hits = self.store.get_many(keys)
        miss = np.array([i for i, k in enumerate(keys) if k not in hits], dtype=np.int64)
        self.last_stats = {"hits": len(keys) - len(miss), "misses": len(miss)}
        out, fresh = {}, {}
        for name, model in stack.base_models_.items():
            with stack.phase("predict.base", model=name):
                if name not in self.names:
                    out[name] = model.predict_proba(X)
                elif len(miss):
                    fresh[name] = np.asarray(model.predict_proba(X.take(miss)), dtype=np.float32)
        rows = np.empty((len(keys), sum(self.widths)), dtype=np.float32)
        for i, k in enumerate(keys):
            if k in hits:
                rows[i] = hits[k]
        if len(miss):
            rows[miss] = np.concatenate([fresh[n] for n in self.names], axis=1)
            with events.stage("predict.base_cache"):
                self.store.put_many({keys[i]: rows[i] for i in miss})
        edges = np.cumsum([0, *self.widths])
        for j, name in enumerate(self.names):
            out[name] = rows[:, edges[j]:edges[j + 1]]
        return {name: out[name] for name in stack.base_models_}  # the stack's own model order


def for_stack(cache_dir: str, stack, folder: Path | None, versions: dict,
              max_idle_days: int = 0) -> BaseProbaCache | None:
    """The cache of a stack saved in ``folder`` (None: off, unsaved, or no text model)."""
    names = cached_models(stack)
    if not cache_dir or folder is None or not names or not (folder / "base").is_dir():
        return None
    widths = [len(stack.base_models_[n].classes_) for n in names]
    return BaseProbaCache(cache_dir, stack_key(folder, names, versions), names, widths, max_idle_days)


def serve(clf, stack, X: ItemInputs, folder: str) -> dict[str, np.ndarray]:
    """``stack.base_proba(X)`` for the stack saved at ``folder`` of ``clf``'s model directory, through
    its cache (opened once per classifier and setting; ``clf.last_base_cache_stats_`` after a use)."""
    caches = clf.__dict__.setdefault("_base_caches", {})
    setting = (clf.config.cache.base_probas_dir, clf.config.cache.max_idle_days)
    if (folder, setting) not in caches:
        model_dir = getattr(clf, "model_dir_", None)
        caches[folder, setting] = for_stack(setting[0], stack, None if model_dir is None else Path(model_dir) / folder,
                                            getattr(clf, "versions_", {}), setting[1])
    cache = caches[folder, setting]
    if cache is None:
        return stack.base_proba(X)
    out = cache.base_proba(stack, X)
    clf.last_base_cache_stats_ = cache.last_stats
    return out
