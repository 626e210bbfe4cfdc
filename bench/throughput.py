"""Throughput of the nightly path next to the machine's limits, measured in one process.

Each repeat runs, back to back so machine load hits all of them alike:
  cold        -- ``run_nightly`` on the demo catalog with a fresh, empty embedding cache, on the
                 chosen runtime (``image.runtime`` and the char-CNN's ``runtime``, ``auto``: OpenVINO
                 on the CPU)
  limit       -- the chosen runtime's forward pass alone on pre-decoded batches of the product's
                 batch size (the limit a cold night is measured against), right before and right
                 after the cold night, averaged; then torch eager's
  warm        -- ``run_nightly`` again with the cache the cold run filled
  torch cold, torch warm -- the same two nights with torch eager for the image backbone and the
                 char-CNN (own cache; on ``torch_rows`` rows when set, else the whole catalog)
The FLOP roofline's GEMM peak (bench/roofline.py) is measured before the first repeat and after
each one, and the best is kept: one short measurement caught in a slow spell of the machine
once put the peak at half its value (and the runtime above 100% of it). Ratios are taken per repeat and the
median is reported. Stage times come from the product's timing hook
(``catalog_classifier.events``), turned into exclusive wall seconds per stage by
``bench.stages.StageTimer``. Where the chosen runtime is torch (CUDA) the torch figures are
the runtime's own and nothing is run twice.
"""
from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path


def _images(clf, catalog: str, cfg, n: int) -> tuple[list[str], str | None]:
    from catalog_classifier.catalog import read_catalog

    cat = read_catalog(catalog, cfg.catalog)
    refs = [r for r in cat.items["image"].tolist() if isinstance(r, str) and r.strip()]
    return refs[:n], cat.image_root


def predecode(embedder, refs: list[str]):
    """The product's own read + decode + letterbox, done up front (not timed)."""
    out = []
    for ref in refs:
        data, _ = embedder._read(ref)
        x, _ = embedder._decode(data) if data is not None else (None, None)
        if x is not None:
            out.append(x)
    return out


def limit_batches(tensors, batch_size: int, device: str) -> list:
    """The pre-decoded images as the forward limit feeds them: batches of the product's size, on
    the device in the layout the forward pass wants (built once, outside every timing)."""
    import torch

    batches = [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
    if device.startswith("cuda"):
        batches = [b.to(device).contiguous(memory_format=torch.channels_last) for b in batches]
    return batches


def cnn_limit(runtime, batches: list, repeats: int = 1) -> float:
    """Items/s of the runtime's forward pass alone on pre-decoded batches (after one warm-up batch)."""
    from catalog_classifier.features.backbone import embed_forward

    embed_forward(runtime, batches[0])
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            embed_forward(runtime, b)  # returns CPU tensors: a CUDA run is synchronised here
        best.append(sum(len(b) for b in batches) / (time.perf_counter() - t0))
    return statistics.median(best)


def _text_runtime(clf, runtime) -> dict:
    """Set the text models' inference runtime (the char-CNN's ``runtime`` estimator parameter) for
    the nights that follow: one name for all, or {model: name}; returns the previous settings."""
    before = {}
    for name, model in clf.stack_.base_models_.items():
        if "runtime" in model.get_params():
            before[name] = model.get_params()["runtime"]
            model.set_params(runtime=runtime if isinstance(runtime, str) else runtime[name])
    return before


def _warm_up_text(clf) -> None:
    """Compile the text models' runtime before timing (once per process, as a night's first chunk does)."""
    from types import SimpleNamespace

    for model in clf.stack_.base_models_.values():
        if "runtime" in model.get_params():
            model.predict_proba(SimpleNamespace(texts=["warm up"] * 256))  # a full batch: compiles


def _preload(clf, cfg) -> None:
    """Load the runtime the night will serve with (as the night itself would, same settings) before
    the clock starts: nights of one process share it, and its load is ``model_load_s``."""
    from catalog_classifier.nightly.batch.plan import serving

    clf.config = clf.config.with_overrides(**serving(cfg))
    clf._embedder(cfg.catalog.image_root).model


def _night(clf, catalog, cfg, out: Path, timer) -> dict:
    from catalog_classifier.nightly.batch.job import run_nightly

    shutil.rmtree(out.parent, ignore_errors=True)
    _preload(clf, cfg)
    timer.reset()
    t0 = time.perf_counter()
    res = run_nightly(catalog, out, clf, cfg, force=True, progress=False, date="2000-01-01")
    wall = time.perf_counter() - t0
    stages, detail = timer.rollup(wall)
    rows = int(sum(res.counts.values()))
    return {"wall_s": round(wall, 3), "items": rows, "items_per_s": round(rows / wall, 2),
            "stage_seconds": stages, "stage_detail": detail}


def run(spec: dict) -> dict:
    """Worker task. spec: model_dir, catalog, config, overrides, work, repeats, limit_images, device,
    torch_catalog (the torch nights' rows; default: catalog)."""
    import torch

    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.config import load_config
    from catalog_classifier import events
    from catalog_classifier.features.backbone import input_size, load_backbone, resolve_precision
    from catalog_classifier.features.embeddings import EmbeddingCache
    from catalog_classifier.features.runtimes import TorchRuntime

    from .roofline import gflop_per_image, matmul_peak
    from .stages import StageTimer

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    work = Path(spec["work"])
    base = load_config(spec["config"]).with_overrides(**spec.get("overrides", {}))
    t0 = time.perf_counter()
    clf = CatalogClassifier.load(spec["model_dir"])
    device = base.image.device
    refs, image_root = _images(clf, spec["catalog"], base, spec["limit_images"])
    clf.config = clf.config.with_overrides(image={"device": device, "batch_size": base.image.batch_size})
    embedder = clf._embedder(image_root)  # exactly the served backbone (the model's own weights)
    runtime = embedder.model  # loaded, exported or compiled here, not inside a timed night
    _warm_up_text(clf)
    load_s = time.perf_counter() - t0
    on_torch = runtime.name == "torch"
    torch_module = runtime.module if on_torch else load_backbone(embedder.cfg)
    torch_rt = runtime if on_torch else TorchRuntime(torch_module, resolve_precision(embedder.cfg))
    tensors = predecode(embedder, refs)
    batches = limit_batches(tensors, base.image.batch_size, device)
    gpu_pipeline = None
    if device.startswith("cuda") and spec.get("gpu_decode", True):
        from .gpu import gpu_decode_pipeline

        gpu_pipeline = gpu_decode_pipeline(torch_module, refs, image_root, base.image.batch_size,
                                           input_size(base.image))
    roofline = None
    if not device.startswith("cuda"):
        roofline = {"gflop_per_image": round(gflop_per_image(torch_module, input_size(base.image)), 4),
                    **matmul_peak(_gemm_n(spec))}

    runs = []
    timer = StageTimer()
    torch_catalog = spec.get("torch_catalog") or spec["catalog"]
    _warm_up_night(clf, spec["catalog"], base, work)
    with events.listening(timer):
        for r in range(spec["repeats"]):
            cache = work / f"cache-{r}"
            shutil.rmtree(cache, ignore_errors=True)
            cfg = base.with_overrides(image={"cache_dir": str(cache)}, cache={"base_probas_dir": str(cache)})
            # the limit is measured right before and right after the cold night and averaged: the
            # machine's speed drifts within seconds, and one side alone skews the pair's ratio
            before = cnn_limit(runtime, batches)
            cold = _night(clf, spec["catalog"], cfg, work / f"cold-{r}" / "2000-01-01", timer)
            cold["embeddings_computed"] = len(EmbeddingCache(str(cache), embedder.key, embedder.embedding_dim))
            after = cnn_limit(runtime, batches)
            limit = (before + after) / 2
            torch_limit = limit if on_torch else cnn_limit(torch_rt, batches)
            # warm as before the text models' content cache: the images seen, the texts new
            new_texts = cfg.with_overrides(cache={"base_probas_dir": str(work / f"texts-new-{r}")})
            warm_new_texts = _night(clf, spec["catalog"], new_texts, work / f"warm-nt-{r}" / "2000-01-01", timer)
            warm = _night(clf, spec["catalog"], cfg, work / f"warm-{r}" / "2000-01-01", timer)
            cnn_s = cold["stage_detail"].get("cnn", 0.0)
            run = {"repeat": r, "cold": cold, "warm": warm, "warm_new_texts": warm_new_texts,
                   "limit_items_per_s": round(limit, 2),
                   "limit_before_after_items_per_s": [round(before, 2), round(after, 2)],
                   "matmul_peak": matmul_peak(_gemm_n(spec)) if roofline else None,
                   "torch_limit_items_per_s": round(torch_limit, 2),
                   "cold_to_limit": round(cold["items_per_s"] / limit, 3),
                   "warm_over_cold": round(warm["items_per_s"] / cold["items_per_s"], 2),
                   "cnn_in_run_items_per_s": round(cold["embeddings_computed"] / cnn_s, 2) if cnn_s else None}
            if not on_torch:
                run.update(_torch_nights(clf, torch_catalog, base, work, r, timer))
                run["cold_over_torch_cold"] = round(cold["items_per_s"] / run["torch_cold"]["items_per_s"], 2)
                run["warm_over_torch_warm"] = round(warm["items_per_s"] / run["torch_warm"]["items_per_s"], 2)
            runs.append(run)
    out = summarize(runs, device, base, spec, len(tensors), load_s, gpu_pipeline)
    out.update(_runtime_fields(runs, runtime.name, roofline))
    if "cold_over_torch_cold" in out:
        out["targets"]["cold_over_torch_cold"] = {"target": 5.0, "measured": out["cold_over_torch_cold"],
                                                  "met": bool(out["cold_over_torch_cold"] >= 5.0)}
    if on_torch:  # the runtime is torch (CUDA): its nights are the torch nights
        out.update(torch_cold_items_per_s=out["cold_items_per_s"], torch_warm_items_per_s=out["warm_items_per_s"])
    return out


def _warm_up_night(clf, catalog, base, work: Path) -> None:
    """One untimed night on a few rows first: the process's one-time costs (lazy imports, first
    pandas/LightGBM calls) then land in no measured night (they would all hit the first cold one)."""
    from .scaling import replicate_catalog
    from .stages import StageTimer

    work.mkdir(parents=True, exist_ok=True)
    rows = work / "warm-up.csv"
    replicate_catalog(catalog, rows, 1, rows=8)
    cfg = base.with_overrides(image={"cache_dir": str(work / "cache-warm-up")},
                              cache={"base_probas_dir": str(work / "cache-warm-up")})
    _night(clf, str(rows), cfg, work / "warm-up" / "2000-01-01", StageTimer())
    shutil.rmtree(work / "cache-warm-up", ignore_errors=True)


def _torch_nights(clf, catalog, base, work: Path, r: int, timer) -> dict:
    """Cold and warm nights with torch eager for the backbone and the char-CNN (own cache)."""
    cache = work / f"cache-torch-{r}"
    shutil.rmtree(cache, ignore_errors=True)
    cfg = base.with_overrides(image={"cache_dir": str(cache), "runtime": "torch"}, cache={"base_probas_dir": str(cache)})
    before = _text_runtime(clf, "torch")
    try:
        cold = _night(clf, catalog, cfg, work / f"torch-cold-{r}" / "2000-01-01", timer)
        warm = _night(clf, catalog, cfg, work / f"torch-warm-{r}" / "2000-01-01", timer)
    finally:
        _text_runtime(clf, before)
        clf.config = clf.config.with_overrides(image={"runtime": base.image.runtime})
    return {"torch_cold": cold, "torch_warm": warm}


def _gemm_n(spec: dict) -> int:
    return 1024 if spec.get("quick") else 2048


def _best_peak(roofline: dict, runs: list[dict]) -> dict:
    """The roofline with each GEMM rate the best of its measurements (before the first repeat and
    after each one); the first measurement stays in ``first``."""
    first = {k: v for k, v in roofline.items() if k != "gflop_per_image"}
    best = {k: max([v] + [r["matmul_peak"][k] for r in runs]) for k, v in first.items() if k.endswith("_gflops")}
    return {**roofline, **best, "first": first}


def _runtime_fields(runs: list[dict], runtime: str, roofline: dict | None) -> dict:
    """The issue-13 fields of ``throughput``: the chosen runtime next to torch eager and the roofline."""
    med = lambda xs: round(float(statistics.median(xs)), 3)  # noqa: E731
    fwd = med([r["limit_items_per_s"] for r in runs])
    out = {"runtime": runtime, "runtime_forward_items_per_s": fwd,
           "torch_forward_items_per_s": med([r["torch_limit_items_per_s"] for r in runs]),
           "runtime_over_torch_forward": med([r["limit_items_per_s"] / r["torch_limit_items_per_s"] for r in runs])}
    if "torch_cold" in runs[0]:
        out.update({
            "torch_items": runs[0]["torch_cold"]["items"],
            "torch_cold_items_per_s": med([r["torch_cold"]["items_per_s"] for r in runs]),
            "torch_warm_items_per_s": med([r["torch_warm"]["items_per_s"] for r in runs]),
            "cold_over_torch_cold": med([r["cold_over_torch_cold"] for r in runs]),
            "warm_over_torch_warm": med([r["warm_over_torch_warm"] for r in runs]),
            "torch_cold_to_torch_limit": med([r["torch_cold"]["items_per_s"] / r["torch_limit_items_per_s"]
                                              for r in runs]),
            "torch_warm_stage_seconds": _median_run(runs, "torch_warm")["stage_seconds"],
        })
    if roofline:
        roofline = _best_peak(roofline, runs)
        achieved = roofline["gflop_per_image"] * fwd
        out["roofline"] = {**roofline, "runtime_forward_gflops": round(achieved, 1),
                           "torch_forward_gflops": round(roofline["gflop_per_image"] * out["torch_forward_items_per_s"], 1)}
        out["roofline_fraction"] = round(achieved / roofline["peak_gflops"], 3)
    else:
        out["roofline_fraction"] = None
    return out


def _median_run(runs: list[dict], key: str) -> dict:
    order = sorted(runs, key=lambda r: r[key]["items_per_s"])
    return order[len(order) // 2][key]


def summarize(runs, device, cfg, spec, n_limit, load_s, gpu_pipeline) -> dict:
    med = lambda xs: round(float(statistics.median(xs)), 3)  # noqa: E731
    cold, warm = _median_run(runs, "cold"), _median_run(runs, "warm")
    out = {
        "device": device, "batch": cfg.image.batch_size, "chunk_size": cfg.nightly.chunk_size,
        "items": cold["items"], "repeats": len(runs), "threads": _threads(),
        "cold_items_per_s": med([r["cold"]["items_per_s"] for r in runs]),
        "warm_items_per_s": med([r["warm"]["items_per_s"] for r in runs]),
        # warm images, texts the content cache has not seen (the warm night before that cache existed)
        "warm_new_texts_items_per_s": med([r["warm_new_texts"]["items_per_s"] for r in runs]),
        "cnn_forward_limit_items_per_s": med([r["limit_items_per_s"] for r in runs]),
        "limit_images": n_limit,
        "cold_to_limit": med([r["cold_to_limit"] for r in runs]),
        "warm_over_cold": med([r["warm_over_cold"] for r in runs]),
        "stage_seconds": cold["stage_seconds"], "stage_detail": cold["stage_detail"],
        "warm_stage_seconds": warm["stage_seconds"], "warm_stage_detail": warm["stage_detail"],
        "model_load_s": round(load_s, 2), "runs": runs,
    }
    out["targets"] = {
        "warm_over_cold": {"target": 10.0, "measured": out["warm_over_cold"],
                           "met": bool(out["warm_over_cold"] >= 10.0)},
        "cold_to_limit": {"target": 0.6, "measured": out["cold_to_limit"], "met": bool(out["cold_to_limit"] >= 0.6)},
    }
    if gpu_pipeline is not None:
        out["gpu_decode_pipeline"] = gpu_pipeline
    return out


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def stage_shares(stages: dict[str, float]) -> dict[str, float]:
    total = sum(stages.values()) or 1.0
    return {k: round(100.0 * v / total, 1) for k, v in stages.items()}


