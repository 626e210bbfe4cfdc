"""Throughput of the nightly path next to the machine's limit, measured in one process.

Each repeat runs, back to back so machine load hits all three alike:
  cold  -- ``run_nightly`` on the demo catalog with a fresh, empty embedding cache
  limit -- the backbone's forward pass alone (``embed_forward``) on pre-decoded batches of
           the product's batch size, same model object, device and thread count
  warm  -- ``run_nightly`` again with the cache the cold run filled
Ratios are taken per repeat and the median is reported. Stage times come from the
product's timing hook (``catalog_classifier.events``), turned into exclusive wall seconds
per stage by ``bench.stages.StageTimer``.
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


def cnn_limit(model, tensors, batch_size: int, repeats: int = 1) -> float:
    """Items/s of embed_forward alone on pre-decoded batches (after one warm-up batch)."""
    import torch

    from catalog_classifier.features.backbone import embed_forward

    device = next(model.parameters()).device
    batches = [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
    if device.type == "cuda":  # already on the device, in the layout the forward pass wants
        batches = [b.to(device).contiguous(memory_format=torch.channels_last) for b in batches]
    embed_forward(model, batches[0])
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            embed_forward(model, b)  # returns CPU tensors: a CUDA run is synchronised here
        best.append(len(tensors) / (time.perf_counter() - t0))
    return statistics.median(best)


def _night(clf, catalog, cfg, out: Path, timer) -> dict:
    from catalog_classifier.nightly.batch.job import run_nightly

    shutil.rmtree(out.parent, ignore_errors=True)
    timer.reset()
    t0 = time.perf_counter()
    res = run_nightly(catalog, out, clf, cfg, force=True, progress=False, date="2000-01-01")
    wall = time.perf_counter() - t0
    stages, detail = timer.rollup(wall)
    rows = int(sum(res.counts.values()))
    return {"wall_s": round(wall, 3), "items": rows, "items_per_s": round(rows / wall, 2),
            "stage_seconds": stages, "stage_detail": detail}


def run(spec: dict) -> dict:
    """Worker task. spec: model_dir, catalog, config, overrides, work, repeats, limit_images, device."""
    import torch

    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.config import load_config
    from catalog_classifier import events
    from catalog_classifier.features.embeddings import EmbeddingCache

    from .stages import StageTimer

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    work = Path(spec["work"])
    base = load_config(spec["config"]).with_overrides(**spec.get("overrides", {}))
    t0 = time.perf_counter()
    clf = CatalogClassifier.load(spec["model_dir"])
    load_s = time.perf_counter() - t0
    device = base.image.device
    refs, image_root = _images(clf, spec["catalog"], base, spec["limit_images"])
    clf.config = clf.config.with_overrides(image={"device": device, "batch_size": base.image.batch_size})
    embedder = clf._embedder(image_root)  # exactly the served backbone (the model's own weights)
    model = embedder.model
    tensors = predecode(embedder, refs)
    gpu_pipeline = None
    if device.startswith("cuda") and spec.get("gpu_decode", True):
        from .gpu import gpu_decode_pipeline

        gpu_pipeline = gpu_decode_pipeline(model, refs, image_root, base.image.batch_size, base.image.image_size)

    runs = []
    timer = StageTimer()
    with events.listening(timer):
        for r in range(spec["repeats"]):
            cache = work / f"cache-{r}"
            shutil.rmtree(cache, ignore_errors=True)
            cfg = base.with_overrides(image={"cache_dir": str(cache)})
            cold = _night(clf, spec["catalog"], cfg, work / f"cold-{r}" / "2000-01-01", timer)
            cold["embeddings_computed"] = len(EmbeddingCache(str(cache), embedder.key))
            limit = cnn_limit(model, tensors, base.image.batch_size)
            warm = _night(clf, spec["catalog"], cfg, work / f"warm-{r}" / "2000-01-01", timer)
            cnn_s = cold["stage_detail"].get("cnn", 0.0)
            runs.append({"repeat": r, "cold": cold, "warm": warm, "limit_items_per_s": round(limit, 2),
                         "cold_to_limit": round(cold["items_per_s"] / limit, 3),
                         "warm_over_cold": round(warm["items_per_s"] / cold["items_per_s"], 2),
                         "cnn_in_run_items_per_s": round(cold["embeddings_computed"] / cnn_s, 2) if cnn_s else None})
    return summarize(runs, device, base, spec, len(tensors), load_s, gpu_pipeline)


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


