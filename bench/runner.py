"""``python -m bench`` (``make bench``): plan the sections, run each measurement in a child process,
write ``results.json`` and ``RESULTS.md``.

Order matters: the Flipkart level-1 quality fit is also the model the throughput and
scaling sections serve, and its training time includes computing the demo catalog's
embeddings into a fresh cache (the later fits reuse them, and say so).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .machine import load_average, machine_info, now_iso, versions
from .worker import ROOT, Spawner

DEMO_CSV = ROOT / "data" / "flipkart1050" / "flipkart_com-ecommerce_sample_1050.csv"
DEMO_CFG = ROOT / "data" / "flipkart1050" / "catalog.yaml"
# the shared catalogs (BigBasket, ...): ../shared/datasets, or CATALOG_CLASSIFIER_DATASETS (make sets it
# from SHARED); the tests read this too
SHARED = Path(os.environ.get("CATALOG_CLASSIFIER_DATASETS") or ROOT.parent / "shared" / "datasets").resolve()
SECTIONS = ("quality", "throughput", "scaling", "engines", "taxonomy")
# the keys of section_seconds that together make a full run
FULL_RUN_SECTIONS = ("quality_and_training", "throughput", "scaling", "engines", "taxonomy")


@dataclass
class CatalogSpec:
    name: str
    path: Path
    config: Path
    levels: tuple[int, ...]
    overrides: dict = field(default_factory=dict)  # config sections merged over `config`
    subsample: int | None = None


@dataclass
class Settings:
    quick: bool
    catalogs: list[CatalogSpec]
    throughput_repeats: int
    limit_images: int
    throughput_rows: int | None  # None = the whole demo catalog
    scaling_replicas: tuple[int, ...]
    scaling_rows: int | None
    device: str = "cpu"
    threads: int | None = None
    engine_cold_rows: int = 256  # the local-vs-ray cold comparison runs on this many demo rows
    torch_rows: int | None = None  # the torch-eager nights' rows (None = the throughput catalog)
    taxonomy_rows: int = 6000  # BigBasket items relabelled to each leaf count (bench/taxonomy.py)
    taxonomy_leaves: tuple[int, ...] = (100, 300, 1000)


# BigBasket is 27.5k items and level 2 has 90 classes: on 2 cores one full fit (six char-CNN
# and six linear-text fits, LightGBM growing one tree per class per round) plus the peers takes
# longer than the whole benchmark may. The benchmark therefore fits a fixed random sample of
# BIGBASKET_ITEMS items (seed = stack.seed) with budgeted char-CNN epochs and LightGBM rounds
# (the product settings are in configs/bigbasket.yaml); `make evaluate` runs the whole catalog.
BIGBASKET_ITEMS = 8000
BIGBASKET_CAPS = {"models": {"char_cnn": {"epochs": 3}}, "stack": {"num_boost_round": 120, "learning_rate": 0.15}}
BIGBASKET_L2_CAPS = {"stack": {"num_boost_round": 60, "learning_rate": 0.2, "early_stopping_rounds": 10}}
# taxonomy cost runs: every size takes the many-class meta (stacking/rerank.py), so the ratios
# compare like with like; text bases without the char-CNN (whose only per-class cost is its
# output layer) and 3 folds keep three fits within the budget
TAXONOMY_CAPS = {"stack": {"n_folds": 3, "num_boost_round": 100, "learning_rate": 0.15, "max_classes_multiclass": 50,
                           "base_models": ["linear_text", "brand_prior"]}}
TAXONOMY_QUICK = {"stack": {"n_folds": 2, "num_boost_round": 10, "sp_vocab_size": 300, "max_classes_multiclass": 5,
                            "base_models": ["linear_text", "brand_prior"]}}


def settings(quick: bool, device: str = "cpu") -> Settings:
    bigbasket = SHARED / "bigbasket" / "BigBasket Products.csv"
    flipkart = SHARED / "flipkart1050" / "flipkart_com-ecommerce_sample_1050.csv"
    flipkart = flipkart if flipkart.exists() else DEMO_CSV
    if quick:
        tiny = {"stack": {"n_folds": 2, "num_boost_round": 20, "sp_vocab_size": 300}, "models": {"char_cnn": {"epochs": 1}}}
        cats = [CatalogSpec("flipkart1050", flipkart, DEMO_CFG, (1,), tiny, subsample=120)]
        if bigbasket.exists():
            cats.append(CatalogSpec("bigbasket", bigbasket, ROOT / "configs" / "bigbasket.yaml", (1,), tiny,
                                    subsample=300))
        return Settings(True, cats, throughput_repeats=1, limit_images=32, throughput_rows=48,
                        scaling_replicas=(1, 2), scaling_rows=24, device=device, engine_cold_rows=24,
                        taxonomy_rows=300, taxonomy_leaves=(20, 40))
    cats = [CatalogSpec("flipkart1050", flipkart, DEMO_CFG, (1, 2))]
    if bigbasket.exists():
        cats.append(CatalogSpec("bigbasket", bigbasket, ROOT / "configs" / "bigbasket.yaml", (1, 2), BIGBASKET_CAPS,
                                subsample=BIGBASKET_ITEMS))
    # sized so the whole run stays under 20 minutes on the 2-core CI machine; three throughput repeats
    # give a real median (the forward limit alone spreads 300-450 img/s from one minute to the next)
    return Settings(False, cats, throughput_repeats=3, limit_images=256, throughput_rows=None,
                    scaling_replicas=(1, 4, 16), scaling_rows=None, device=device, engine_cold_rows=160)


def _merge(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = {**out.get(k, {}), **v}
    return out


def _common(work: Path, device: str) -> dict:
    """Overrides every measurement shares: own cache, no MLflow, absolute paths."""
    return {"image": {"cache_dir": str(work / "cache"), "device": device},
            "catalog": {"image_root": str(DEMO_CFG.parent / "images")},
            "rules": {"rules_dir": str(ROOT / "rules")}, "tracking": {"enabled": False}}


def _say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_quality(sp: Spawner, st: Settings, work: Path, only_model: bool = False) -> tuple[list, list, Path]:
    records, training = [], []
    model_dir = work / "models" / "flipkart1050-L1"
    for cat in st.catalogs:
        for level in cat.levels:
            if only_model and (cat.name, level) != ("flipkart1050", 1):
                continue
            common = _common(work, st.device)
            if cat.name != "flipkart1050":
                common.pop("catalog")
                common.pop("rules")  # the catalog's own config says (relative to the repo root)
            extra = BIGBASKET_L2_CAPS if (cat.name, level, st.quick) == ("bigbasket", 2, False) else {}
            spec = {"catalog": cat.name, "path": str(cat.path), "config": str(cat.config), "level": level,
                    "overrides": _merge(common, cat.overrides, extra), "subsample": cat.subsample,
                    "threads": st.threads,
                    "model_out": str(model_dir) if (cat.name, level) == ("flipkart1050", 1) else None}
            _say(f"quality {cat.name} level {level}: fit with {spec['overrides'].get('stack', {}).get('n_folds', 5)}"
                 f"-fold out-of-fold layer, peers on the same folds")
            res = sp.spawn("quality", spec, work / "logs", f"quality-{cat.name}-L{level}")
            records += res["records"]
            training.append({**res["training"], "process_peak_rss_mb": res["process_peak_rss_mb"],
                             "process_cpu_s": res["process_cpu_s"],
                             "settings": res["settings"]})
            stack = next(r for r in res["records"] if r["model"] == "stack")
            _say(f"  done in {res['process_wall_s']:.0f} s (fit {res['training']['wall_s']:.0f} s): stack macro-F1 "
                 f"{stack['macro_f1']:.3f}, coverage@0.98 {stack['coverage_at_098']:.3f}")
    return records, training, model_dir


def run_throughput(sp: Spawner, st: Settings, work: Path, model_dir: Path) -> dict:
    catalog = DEMO_CSV
    if st.throughput_rows:
        from .scaling import replicate_catalog

        catalog = work / "throughput-catalog.csv"
        replicate_catalog(DEMO_CSV, catalog, 1, rows=st.throughput_rows)
    torch_catalog = catalog
    if st.torch_rows:
        from .scaling import replicate_catalog

        torch_catalog = work / "throughput-torch-catalog.csv"
        replicate_catalog(DEMO_CSV, torch_catalog, 1, rows=st.torch_rows)
    spec = {"model_dir": str(model_dir), "catalog": str(catalog), "config": str(DEMO_CFG),
            "overrides": _common(work, st.device), "work": str(work / "throughput"), "threads": st.threads,
            "repeats": st.throughput_repeats, "limit_images": st.limit_images, "torch_catalog": str(torch_catalog),
            "quick": st.quick}
    _say(f"throughput on {st.device}: {st.throughput_repeats} x (cold, forward limits, warm, torch cold + warm)")
    res = sp.spawn("throughput", spec, work / "logs", f"throughput-{st.device}")
    _say(f"  {res['runtime']}: cold {res['cold_items_per_s']:.1f} items/s, warm {res['warm_items_per_s']:.1f}, "
         f"forward limit {res['runtime_forward_items_per_s']:.1f} (cold/limit {res['cold_to_limit']:.2f}, "
         f"warm/cold {res['warm_over_cold']:.1f}); torch eager: forward {res['torch_forward_items_per_s']:.1f}, "
         f"cold {res['torch_cold_items_per_s']}, warm {res['torch_warm_items_per_s']}; "
         f"roofline fraction {res['roofline_fraction']}")
    res["peak_rss_mb"] = res.pop("process_peak_rss_mb")
    return res


def run_scaling(sp: Spawner, st: Settings, work: Path, model_dir: Path) -> tuple[list, dict]:
    """One process per size, each with its own copy of a cache holding the demo's embeddings."""
    from .scaling import replicate_catalog, summarize

    rows = []
    filled = work / "throughput" / "cache-0"  # the first cold throughput run filled it
    for r in st.scaling_replicas:
        csv = work / "scaling" / f"demo-x{r}.csv"
        n = replicate_catalog(DEMO_CSV, csv, r, rows=st.scaling_rows)
        common = _common(work, st.device)
        cache = work / "scaling" / f"cache-x{r}"
        if filled.exists():
            shutil.copytree(filled, cache, dirs_exist_ok=True)
        common["image"]["cache_dir"] = str(cache)
        spec = {"model_dir": str(model_dir), "catalog": str(csv), "config": str(DEMO_CFG), "overrides": common,
                "out": str(work / "scaling" / f"night-x{r}" / "2000-01-01"), "threads": st.threads}
        res = sp.spawn("nightly", spec, work / "logs", f"scaling-x{r}")
        rows.append({"replicas": r, "items": n, "wall_s": res["wall_s"], "items_per_s": res["items_per_s"],
                     "peak_rss_mb": res["process_peak_rss_mb"], "process_wall_s": res["process_wall_s"],
                     "cache": "warm" if filled.exists() else "empty", "process_cpu_s": res["process_cpu_s"],
                     "peak_rss_after_model_load_mb": res["peak_rss_after_model_load_mb"]})
        _say(f"scaling {r}x: {n} items in {res['wall_s']:.1f} s, peak RSS {res['process_peak_rss_mb']:.0f} MB")
    return rows, summarize(rows)


def run_engines(sp: Spawner, st: Settings, work: Path, model_dir: Path) -> dict:
    """Local vs Ray engine on the demo catalog: warm cache (whole catalog), cold (a slice)."""
    from .machine import usable_cores
    from .scaling import replicate_catalog

    filled = work / "throughput" / "cache-0"
    warm = work / "throughput-catalog.csv" if st.throughput_rows else DEMO_CSV
    if not warm.exists():
        replicate_catalog(DEMO_CSV, warm, 1, rows=st.throughput_rows)
    cold = work / "engines-cold.csv"
    replicate_catalog(DEMO_CSV, cold, 1, rows=st.engine_cold_rows)
    spec = {"model_dir": str(model_dir), "config": str(DEMO_CFG), "overrides": _common(work, st.device),
            "warm_catalog": str(warm),
            "cold_catalog": str(cold), "warm_cache": str(filled),
            "work": str(work / "engines"), "cpus": usable_cores() or 2, "threads": st.threads}
    _say("engines: local vs ray (local Ray instance on this machine), warm and cold")
    res = sp.spawn("engines", spec, work / "logs", "engines")
    if "skipped" not in res:
        _say(f"  warm: local {res['warm_local']['items_per_s']} vs ray {res['warm_ray']['items_per_s']} items/s; "
             f"cold: local {res['cold_local']['items_per_s']} vs ray {res['cold_ray']['items_per_s']}")
    return res


def run_taxonomy(sp: Spawner, st: Settings, work: Path) -> dict:
    """Stack training cost at each leaf count, one fresh process per size (bench/taxonomy.py)."""
    from .taxonomy import summarize

    path = SHARED / "bigbasket" / "BigBasket Products.csv"
    if not path.exists():
        return {"skipped": f"dataset missing: {path}"}
    caps = TAXONOMY_QUICK if st.quick else TAXONOMY_CAPS
    rows = []
    for leaves in st.taxonomy_leaves:
        spec = {"path": str(path), "config": str(ROOT / "configs" / "bigbasket.yaml"), "rows": st.taxonomy_rows,
                "leaves": leaves, "overrides": _merge({"tracking": {"enabled": False}}, caps), "threads": st.threads}
        res = sp.spawn("taxonomy", spec, work / "logs", f"taxonomy-{leaves}")
        rows.append({**res, "peak_rss_mb": res["process_peak_rss_mb"]})
        _say(f"taxonomy {res['leaves']} leaves ({res['meta']}): fit {res['wall_s']:.1f} s, "
             f"peak RSS {res['process_peak_rss_mb']:.0f} MB")
    about = (f"Stack fit (`CatalogClassifier.fit`) on {st.taxonomy_rows} real BigBasket items whose "
             f"top-level categories are split into meaningless sub-leaves (cost only; quality comes from real "
             f"levels), one process per size; settings over configs/bigbasket.yaml: {caps}.")
    return {"about": about, "runs": rows, "summary": summarize(rows), "settings": caps}


def run_bench(out: Path, quick: bool = False, sections: tuple[str, ...] = SECTIONS, work: Path | None = None,
              gpu: bool = False, threads: int | None = None, notes: list[str] = (), resume: bool = False) -> dict:
    """Run the benchmark; write out/results.json and out/RESULTS.md; return the results."""
    from .report import write_markdown

    st = settings(quick, device="cuda" if gpu else "cpu")
    st.threads = threads
    work = Path(work or (ROOT / "out" / ("bench-work-quick" if quick else "bench-work")))
    sp = Spawner(reuse=resume)
    if not resume:
        shutil.rmtree(work, ignore_errors=True)  # fresh caches: cold means cold
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    res_path = out / "results.json"
    # a GPU run or a run of some sections only updates the existing results (other sections kept)
    partial = gpu or set(sections) != set(SECTIONS)
    results = json.loads(res_path.read_text()) if partial and res_path.exists() else {}
    if not gpu:
        results.update({"machine": machine_info(), "versions": versions(), "date": now_iso(),
                        "mode": "quick" if quick else "full", "sections_run": list(sections)})
    if notes:
        results["notes"] = list(results.get("notes", [])) + list(notes)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    need_model = any(s in sections for s in ("throughput", "scaling", "engines"))
    records, training, model_dir = [], [], None
    if need_model or gpu or "quality" in sections:
        records, training, model_dir = run_quality(sp, st, work, only_model="quality" not in sections or gpu)
        seconds["gpu_model_fit" if gpu else "quality_and_training"] = round(time.perf_counter() - t, 1)
    if gpu:
        t = time.perf_counter()
        results["gpu"] = {**run_throughput(sp, st, work, model_dir), "machine": machine_info(), "date": now_iso()}
        seconds["gpu_throughput"] = round(time.perf_counter() - t, 1)
        results.setdefault("section_seconds", {}).update(seconds)
    else:
        if "quality" in sections:
            results["quality"], results["training"] = records, training
        if need_model and "throughput" in sections:
            t = time.perf_counter()
            results["throughput"] = run_throughput(sp, st, work, model_dir)
            seconds["throughput"] = round(time.perf_counter() - t, 1)
        if need_model and "scaling" in sections:
            t = time.perf_counter()
            results["scaling"], results["scaling_summary"] = run_scaling(sp, st, work, model_dir)
            seconds["scaling"] = round(time.perf_counter() - t, 1)
        if need_model and "engines" in sections:
            t = time.perf_counter()
            results["engines"] = run_engines(sp, st, work, model_dir)
            seconds["engines"] = round(time.perf_counter() - t, 1)
        if "taxonomy" in sections:
            t = time.perf_counter()
            results["taxonomy"] = run_taxonomy(sp, st, work)
            seconds["taxonomy"] = round(time.perf_counter() - t, 1)
        wall = round(time.perf_counter() - t_all, 1)
        seconds["cpu_total"] = round(sp.cpu_seconds, 1)  # all measuring processes; idle 2-core wall >= cpu/2
        merged = {**(results.get("section_seconds", {}) if partial else {}), **seconds}
        if partial:
            # a run of some sections does not time `make bench`: the total is the sum of each
            # section's latest run, and this run's own wall time is kept beside it
            merged["this_run"] = wall
            merged["total"] = round(sum(merged.get(k, 0.0) for k in FULL_RUN_SECTIONS), 1)
            merged["total_from_sections"] = True
        else:
            merged["total"] = wall
            merged.pop("this_run", None)
            merged.pop("total_from_sections", None)
        results["section_seconds"] = merged
        results["settings"] = _settings_summary(st)
        results["machine"]["load_average_at_end"] = load_average()
    write_results(results, res_path)
    write_markdown(results, out / "RESULTS.md")
    _say(f"wrote {res_path} and {out / 'RESULTS.md'} in {time.perf_counter() - t_all:.0f} s")
    return results


def write_results(results: dict, path: Path) -> None:
    """results.json, written atomically (the committed file is never half-written)."""
    from catalog_classifier.io_utils import atomic_write_text

    atomic_write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", path)


def _settings_summary(st: Settings) -> dict:
    d = asdict(st)
    for c in d["catalogs"]:
        c["path"] = str(Path(c["path"]).relative_to(ROOT.parent)) if ROOT.parent in Path(c["path"]).parents \
            else str(c["path"])
        c["config"] = str(Path(c["config"]).relative_to(ROOT))
    d["bigbasket_level2_caps"] = BIGBASKET_L2_CAPS
    return d
