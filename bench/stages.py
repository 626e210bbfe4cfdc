"""Where the nightly path spends its time: exclusive wall-clock seconds per stage.

The product reports its stages through ``catalog_classifier.events`` (``subscribe`` a
callback, receive ``(stage, seconds, info)`` as each stage ends). ``StageTimer`` is such a
callback: it charges each stage's seconds to its fine stage minus the seconds of the stages
nested inside it (``info["depth"]``), so the fine stages add up to the timed part of the run
and ``other`` is the rest. Only stages on the main thread count (the embedder's read/decode
thread pool runs inside ``image.embed``, which is charged to ``decode`` as a whole).

A product stage this map does not know is charged to a fine stage of its own name (and to
``other`` in the rollup): the benchmark test fails on such a name in ``stage_detail``, so a
renamed stage cannot silently turn into zeros.
"""
from __future__ import annotations

import threading
from collections import defaultdict

# product stage (catalog_classifier.events) -> fine stage of results.json's stage_detail
FINE = {
    "image.embed": "decode",  # read, sha256, PIL decode, letterbox (minus the nested stages below)
    "image.forward": "cnn",
    "image.load": "model_load",
    "image.cache": "cache",
    "cache.prune": "cache",  # once a day per cache file: rows idle cache.max_idle_days deleted
    "predict.inputs": "features",  # text normalisation, tabular + sentencepiece features
    "predict.base_cache": "text",  # the text models' content cache: row keys, SQLite reads/writes
    "predict.meta": "lightgbm",  # meta matrix, booster, opinion pool, temperature
    "predict.route": "route",  # thresholds + rules
    "predict.explain": "lightgbm",  # pred_contrib of the rows not accepted at full depth
    "nightly.write_part": "write",
    "nightly.merge": "write",
    "nightly.report": "write",
    "nightly.queue": "queue",  # review queue + 3 export formats
    "nightly.drift": "drift",
}
BASE_FINE = {"char_cnn": "text", "linear_text": "text", "brand_prior": "text", "image_head": "image_head"}  # predict.base by model
# fine stage -> the stage reported in results.json ("other" = everything not listed)
ROLLUP = {"decode": "decode", "cnn": "cnn", "text": "text", "features": "features", "image_head": "features",
          "route": "features", "lightgbm": "lightgbm", "write": "write", "queue": "write"}
STAGES = ("decode", "cnn", "text", "features", "lightgbm", "write", "other")
# training phases (phases_s of results.json): fit.stack less its nested fit.base stages is the meta;
# embed is the image embedding (read, decode, forward pass on the chosen runtime, cache), nested in inputs
PHASES = {"fit.inputs": "inputs", "fit.stack": "meta", "fit.rules": "rules", "image.embed": "embed"}


def _fine(stage: str, info: dict) -> str:
    if stage == "predict.base":
        return BASE_FINE.get(info.get("model"), "features")
    return FINE.get(stage, stage)


class ExclusiveTimes:
    """Exclusive seconds per key from nested stage events of one thread (children end first)."""

    def __init__(self, key, thread: str | None = None) -> None:
        self.key = key  # (stage, info) -> key, or None to ignore the stage (its time goes to its parent)
        self.thread = thread or threading.main_thread().name
        self.totals: dict[str, float] = defaultdict(float)
        self.events: list[tuple[str, float, dict]] = []  # every stage received, in delivery order
        self._nested: dict[int, float] = defaultdict(float)  # seconds of finished children per depth

    def __call__(self, stage: str, seconds: float, info: dict) -> None:
        if info.get("thread", self.thread) != self.thread:
            return
        self.events.append((stage, seconds, info))
        depth = int(info.get("depth", 0))
        inner = self._nested.pop(depth + 1, 0.0)
        key = self.key(stage, info)
        if key is None:  # transparent: its children count towards its parent
            self._nested[depth] += inner
            return
        self.totals[key] += seconds - inner
        self._nested[depth] += seconds

    def reset(self) -> None:
        self.totals.clear()
        self.events.clear()
        self._nested.clear()


class StageTimer(ExclusiveTimes):
    """The nightly path's fine stages, rolled up into the issue's six stages + other."""

    def __init__(self) -> None:
        super().__init__(_fine)

    def rollup(self, total_s: float) -> tuple[dict[str, float], dict[str, float]]:
        """(the six stages + other, fine stages) in seconds for a run that took total_s."""
        coarse = dict.fromkeys(STAGES, 0.0)
        for fine, s in self.totals.items():
            coarse[ROLLUP.get(fine, "other")] += s
        untimed = max(0.0, total_s - sum(self.totals.values()))
        coarse["other"] += untimed
        fine = {k: round(v, 3) for k, v in sorted(self.totals.items())}
        fine["untimed"] = round(untimed, 3)
        return {k: round(v, 3) for k, v in coarse.items()}, fine


def phase_key(stage: str, info: dict) -> str | None:
    """Training phases: inputs, embed, one per base model, meta, rules (the stages inside image.embed
    fold into embed)."""
    if stage == "fit.base":
        return str(info.get("model"))
    return PHASES.get(stage)
