"""Local vs Ray engine throughput on this machine (recorded, not judged).

On one machine Ray can only add overhead (instance start, actors loading the model,
object-store copies); the figure tells how much, so that a cluster's gain can be read
against it. Both engines run the same catalog, the same model and the same config, once
with a warm embedding cache (engine overhead dominates) and once cold on a slice (the
CNN dominates), each into its own folder; the outputs are checked to be row-for-row equal.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path


def _night(catalog: str, out: Path, clf, cfg) -> tuple[float, int, Path]:
    from catalog_classifier.nightly.batch.job import run_nightly

    t0 = time.perf_counter()
    res = run_nightly(catalog, out, clf, cfg, force=True, progress=False, date="2000-01-01")
    return time.perf_counter() - t0, int(sum(res.counts.values())), res.predictions


def _same(a: Path, b: Path) -> bool:
    import pandas as pd

    x, y = pd.read_parquet(a), pd.read_parquet(b)
    cols = ["item_id", "row", "status", "category"]
    return bool(x[cols].equals(y[cols]) and (x["confidence"] - y["confidence"]).abs().fillna(0).max() <= 1e-6)


def run(spec: dict) -> dict:
    """Worker task. spec: model_dir, config, overrides, warm_catalog, cold_catalog, warm_cache, work, cpus."""
    import torch

    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.config import load_config

    try:
        import ray
    except ImportError:
        return {"skipped": "the ray extra is not installed (pip install '.[ray]')"}
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    work = Path(spec["work"])
    shutil.rmtree(work, ignore_errors=True)
    clf = CatalogClassifier.load(spec["model_dir"])
    base = load_config(spec["config"]).with_overrides(**spec["overrides"])
    t0 = time.perf_counter()
    ray.init(num_cpus=spec["cpus"], include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    rows = {}
    if not Path(spec["warm_cache"]).exists():  # the throughput section did not run: fill one
        _night(spec["warm_catalog"], work / "fill", clf,
               base.with_overrides(image={"cache_dir": spec["warm_cache"]}, nightly={"engine": "local"}))
    try:
        for mode, catalog in (("warm", spec["warm_catalog"]), ("cold", spec["cold_catalog"])):
            outs, walls = {}, {}
            for engine in ("local", "ray"):
                cache = work / f"cache-{mode}-{engine}"
                if mode == "warm":
                    shutil.copytree(spec["warm_cache"], cache)
                cfg = base.with_overrides(image={"cache_dir": str(cache)}, nightly={"engine": engine})
                wall, items, outs[engine] = _night(catalog, work / f"{mode}-{engine}", clf, cfg)
                walls[engine] = wall
                rows[f"{mode}_{engine}"] = {"wall_s": round(wall, 2), "items": items,
                                            "items_per_s": round(items / wall, 1)}
            rows[f"{mode}_outputs_equal"] = _same(outs["local"], outs["ray"])
            rows[f"{mode}_ray_over_local"] = float(f"{walls['local'] / walls['ray']:.4g}")  # throughput ratio, 4 digits
    finally:
        ray.shutdown()
    return {"ray_start_s": round(ray_start, 2), "ray_cpus": spec["cpus"], "ray_version": ray.__version__,
            "actors": {"image": base.ray.image_actors, "score": base.ray.score_actors}, **rows}
