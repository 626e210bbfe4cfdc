"""Where the nightly path spends its time: exclusive wall-clock seconds per stage.

The product code carries no timing hooks. For a benchmark run the functions that make
up each stage are wrapped in place (in the benchmark's own worker process only); a
wrapper charges its wall time to its stage minus the time of wrapped calls nested inside
it, so the stages add up to the instrumented part of the run and ``other`` is the rest.
Only calls on the main thread are timed (the embedder's read/decode thread pool runs
inside ``ImageEmbedder.embed``, which is charged to ``decode`` as a whole).

If a wrapped name disappears from the product code, ``install`` fails loudly: the
benchmark test catches a stale stage map instead of silently reporting zeros.
"""
from __future__ import annotations

import functools
import importlib
import threading
import time
from collections import defaultdict
from contextlib import contextmanager

# (module, attribute path, fine stage). Fine stages roll up into the six stages.
TARGETS: tuple[tuple[str, str, str], ...] = (
    ("catalog_classifier.features.embeddings", "ImageEmbedder.embed", "decode"),  # read, sha256, PIL decode, letterbox
    ("catalog_classifier.features.embeddings", "embed_forward", "cnn"),
    ("catalog_classifier.features.embeddings", "load_runtime", "model_load"),  # load + export/compile
    ("catalog_classifier.features.embeddings", "EmbeddingCache.get_many", "cache"),
    ("catalog_classifier.features.embeddings", "EmbeddingCache.put_many", "cache"),
    ("catalog_classifier.models.char_cnn", "CharCNNClassifier.predict_proba", "text"),
    ("catalog_classifier.models.linear_text", "LinearText.predict_proba", "text"),
    ("catalog_classifier.models.image_head", "ImageHead.predict_proba", "image_head"),
    ("catalog_classifier.classifier", "CatalogClassifier.inputs", "features"),  # text normalisation
    ("catalog_classifier.classifier", "CatalogClassifier._passthrough", "features"),  # tabular, sentencepiece
    ("stacking.stack", "build_meta_matrix", "features"),
    ("stacking.stack", "raw_scores", "lightgbm"),
    ("catalog_classifier.classifier", "CatalogClassifier.route", "route"),  # thresholds + rules
    ("catalog_classifier.nightly.runner", "write_part", "write"),
    ("catalog_classifier.nightly.runner", "merge_parts", "write"),
    ("catalog_classifier.nightly.runner", "write_report", "write"),
    ("catalog_classifier.nightly.runner", "build_queue", "queue"),  # review queue + 3 export formats
    ("catalog_classifier.nightly.runner", "drift_report", "drift"),
)
# fine stage -> the stage reported in results.json ("other" = everything not listed)
ROLLUP = {"decode": "decode", "cnn": "cnn", "text": "text", "features": "features", "image_head": "features",
          "route": "features", "lightgbm": "lightgbm", "write": "write", "queue": "write"}
STAGES = ("decode", "cnn", "text", "features", "lightgbm", "write", "other")


class StageTimer:
    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []  # time spent in nested timed calls, per open call
        self._main = threading.main_thread()

    def reset(self) -> None:
        self.totals.clear()

    def wrap(self, fn, stage: str):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if threading.current_thread() is not self._main:
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                nested = self._stack.pop()
                self.totals[stage] += dt - nested
                if self._stack:
                    self._stack[-1] += dt
        timed.__bench_stage__ = stage
        return timed

    def rollup(self, total_s: float) -> tuple[dict[str, float], dict[str, float]]:
        """(the six stages + other, fine stages) in seconds for a run that took total_s."""
        coarse = dict.fromkeys(STAGES, 0.0)
        for fine, s in self.totals.items():
            coarse[ROLLUP.get(fine, "other")] += s
        coarse["other"] += max(0.0, total_s - sum(self.totals.values()))
        fine = {k: round(v, 3) for k, v in sorted(self.totals.items())}
        fine["untimed"] = round(max(0.0, total_s - sum(self.totals.values())), 3)
        return {k: round(v, 3) for k, v in coarse.items()}, fine


def _resolve(module: str, path: str):
    owner = importlib.import_module(module)
    *parents, attr = path.split(".")
    for p in parents:
        owner = getattr(owner, p)
    if not hasattr(owner, attr):
        raise AttributeError(f"benchmark stage map is stale: {module}.{path} no longer exists "
                             f"(update catalog_classifier/bench/stages.py)")
    return owner, attr


@contextmanager
def install(timer: StageTimer, targets=TARGETS):
    """Wrap every target for the duration of the block; restore the originals after."""
    undo = []
    try:
        for module, path, stage in targets:
            owner, attr = _resolve(module, path)
            original = vars(owner).get(attr, getattr(owner, attr)) if isinstance(owner, type) else getattr(owner, attr)
            setattr(owner, attr, timer.wrap(original, stage))
            undo.append((owner, attr, original))
        yield timer
    finally:
        for owner, attr, original in reversed(undo):
            setattr(owner, attr, original)
