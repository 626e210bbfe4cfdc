"""`python -m bench --quick` end to end, and the product's timing hook it measures through.

Figures from --quick are not meaningful (tiny subsamples, 2 folds, 1 epoch); this checks the
plumbing: every section, the JSON layout of issue 4, stage times that add up to the measured
run, the events the product delivers (which stages, in which order, nested how), and that the
benchmark stays outside the installed product.
"""
from __future__ import annotations

import json
import math
import threading
import time

import pytest
from typer.testing import CliRunner

from bench.__main__ import app
from bench.stages import FINE, ROLLUP, STAGES, ExclusiveTimes, StageTimer, phase_key
from catalog_classifier import events
from conftest import DEMO_CSV, DEMO_IMAGES, ROOT, SHARED

QUALITY_KEYS = {"catalog", "level", "model", "accuracy", "macro_f1", "coverage_at_095", "precision_at_095",
                "coverage_at_098", "precision_at_098", "n_items", "n_categories"}
THROUGHPUT_KEYS = {"device", "batch", "chunk_size", "items", "repeats", "threads", "cold_items_per_s",
                   "warm_items_per_s", "cnn_forward_limit_items_per_s", "limit_images", "cold_to_limit",
                   "warm_over_cold", "stage_seconds", "stage_detail", "warm_stage_seconds", "warm_stage_detail",
                   "model_load_s", "runs", "targets", "peak_rss_mb",
                   # issue 13: the chosen runtime next to torch eager and the FLOP roofline
                   "runtime", "torch_cold_items_per_s", "torch_warm_items_per_s", "torch_forward_items_per_s",
                   "runtime_forward_items_per_s", "roofline_fraction", "roofline"}
FINE_STAGES = set(FINE.values()) | {"text", "image_head", "untimed"}
# what a cold nightly run on demo rows must go through (model already loaded: no model_load)
COLD_STAGES = {"decode", "cnn", "cache", "text", "image_head", "features", "lightgbm", "route", "write", "queue",
               "drift"}


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("bench")
    # small problems: one BLAS/OpenMP thread avoids oversubscription on a shared 2-core runner
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CATALOG_CLASSIFIER_THREADS"):
        monkeypatch_module.setenv(var, "1")
    res = CliRunner().invoke(app, ["--quick", "--out", str(out / "bench"), "--work", str(out / "work"),
                                   "--note", "pytest quick run"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out, json.loads((out / "bench" / "results.json").read_text())


@pytest.fixture(scope="module")
def quick_results(quick_run):
    out, r = quick_run
    return out / "bench", r


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_layout_and_sections(quick_results):
    _, r = quick_results
    assert {"machine", "versions", "date", "quality", "throughput", "scaling", "scaling_summary", "training",
            "engines", "section_seconds", "settings"} <= set(r)
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
    assert r["versions"]["torch"] and r["versions"]["lightgbm"] and r["mode"] == "quick"
    assert "gpu" not in r or r["gpu"]["device"].startswith("cuda")
    assert r["notes"] == ["pytest quick run"]
    secs = r["section_seconds"]
    parts = sum(v for k, v in secs.items() if k not in ("total", "cpu_total"))
    assert parts <= secs["total"] + 0.5 and secs["cpu_total"] > 0  # the sections ran inside the total


def test_quality_records_and_training_phases(quick_results):
    _, r = quick_results
    models = {(q["catalog"], q["model"]) for q in r["quality"]}
    for m in ("stack", "tfidf_lr", "frozen_cnn_lr", "image", "text", "linear_text"):
        assert ("flipkart1050", m) in models
    if (SHARED / "bigbasket").exists():  # no images there: no image model, no frozen-CNN peer
        assert ("bigbasket", "stack") in models and ("bigbasket", "frozen_cnn_lr") not in models
    for q in r["quality"]:
        assert QUALITY_KEYS <= set(q), q
        assert 0 <= q["accuracy"] <= 1 and 0 <= q["macro_f1"] <= 1
        for t in ("095", "098"):
            assert 0 <= q[f"coverage_at_{t}"] <= 1
            assert q[f"precision_at_{t}"] is None or 0 <= q[f"precision_at_{t}"] <= 1
    stack = next(q for q in r["quality"] if q["catalog"] == "flipkart1050" and q["model"] == "stack")
    assert stack["accuracy"] > 0.5  # even the tiny fit is far above chance (7 classes)
    assert {f["fold"] for f in stack["per_fold"]} == {0, 1}
    for t in r["training"]:
        assert _positive(t["wall_s"]) and _positive(t["peak_rss_mb"]) and t["catalog"]
        ph = t["phases_s"]
        # one phase per base model, from the fit.base events, plus inputs, meta and rules
        has_images = "image_head" in t["settings"]["base_models"]
        want = {"inputs", "meta", "rules", *t["settings"]["base_models"]} | ({"embed"} if has_images else set())
        assert set(ph) - {"save"} == want, ph
        assert all(v >= 0 for v in ph.values())
        # the phases are disjoint parts of the fit (+ save): together within the measured wall time,
        # and covering nearly all of it (only the label preparation is outside every phase)
        assert sum(ph.values()) <= t["wall_s"] + 0.1
        assert sum(ph.values()) >= 0.8 * t["wall_s"], (ph, t["wall_s"])
    flip = next(t for t in r["training"] if t["catalog"] == "flipkart1050")
    assert "save" in flip["phases_s"] and flip["embeddings_computed"] > 0
    assert flip["phases_s"]["embed"] > flip["phases_s"]["image_head"]  # the embedding phase, on its own


def test_throughput_stages_add_up(quick_results):
    _, r = quick_results
    t = r["throughput"]
    assert THROUGHPUT_KEYS <= set(t) and t["device"] == "cpu" and t["batch"] > 0
    for k in ("cold_items_per_s", "warm_items_per_s", "cnn_forward_limit_items_per_s"):
        assert _positive(t[k])
    for run in ("stage", "warm_stage"):
        assert set(t[f"{run}_seconds"]) == set(STAGES)
        assert set(t[f"{run}_detail"]) <= FINE_STAGES, "a product stage bench/stages.py does not map"
    cold = t["runs"][0]["cold"]
    assert COLD_STAGES <= set(t["stage_detail"]), set(t["stage_detail"])  # an event from every stage
    assert t["stage_seconds"]["cnn"] > 0 and t["stage_seconds"]["decode"] > 0  # cold really ran the CNN
    assert "cnn" not in t["warm_stage_detail"] and t["warm_stage_seconds"]["cnn"] == 0  # warm: all cached
    assert cold["embeddings_computed"] > 0
    # exclusive stage times: the timed ones fit inside the run's wall time, and most of the cold run is timed
    timed = sum(v for k, v in t["stage_detail"].items() if k != "untimed")
    assert timed <= cold["wall_s"] + 0.01
    assert t["stage_detail"]["untimed"] <= 0.5 * cold["wall_s"]
    assert sum(t["stage_seconds"].values()) == pytest.approx(cold["wall_s"], rel=0.02, abs=0.05)
    for fine, s in t["stage_detail"].items():  # the rollup only regroups the fine stages
        if fine != "untimed" and ROLLUP.get(fine, "other") != "other":
            assert t["stage_seconds"][ROLLUP[fine]] >= s - 1e-3
    assert t["runs"][0]["cnn_in_run_items_per_s"] == pytest.approx(
        cold["embeddings_computed"] / t["stage_detail"]["cnn"], rel=0.02)


def test_throughput_against_the_runtime_limit(quick_results):
    _, r = quick_results
    t = r["throughput"]
    assert t["runtime"] == "openvino"  # auto on the CPU
    for k in ("runtime_forward_items_per_s", "torch_forward_items_per_s", "torch_cold_items_per_s",
              "torch_warm_items_per_s"):
        assert _positive(t[k]), k
    assert t["runtime_forward_items_per_s"] == t["cnn_forward_limit_items_per_s"]  # the limit is the runtime's
    assert 0 < t["roofline_fraction"] <= 1
    roof = t["roofline"]
    assert 0.3 < roof["gflop_per_image"] < 2  # EfficientNet-Lite0: ~0.4 GMAC per 224x224 image
    assert roof["peak_gflops"] == max(roof["torch_gflops"], roof.get("openvino_gflops", 0))
    assert t["roofline_fraction"] == pytest.approx(
        roof["gflop_per_image"] * t["runtime_forward_items_per_s"] / roof["peak_gflops"], rel=0.01)
    for run in t["runs"]:  # the torch nights really ran torch: the CNN computed every image again
        cold, torch_cold = run["cold"], run["torch_cold"]
        assert torch_cold["items"] == t["torch_items"] and torch_cold["stage_seconds"]["cnn"] > 0
        assert run["torch_warm"]["stage_seconds"]["cnn"] == 0
        assert run["cold_over_torch_cold"] == pytest.approx(cold["items_per_s"] / torch_cold["items_per_s"], rel=0.02)
        assert run["cold_to_limit"] == pytest.approx(cold["items_per_s"] / run["limit_items_per_s"], rel=0.02)
    md = (quick_results[0] / "RESULTS.md").read_text()
    assert "roofline fraction" in md and "torch eager forward" in md and "embed " in md


def test_scaling(quick_results):
    _, r = quick_results
    sizes = [s["replicas"] for s in r["scaling"]]
    assert sizes == sorted(sizes) and sizes[0] == 1
    for s in r["scaling"]:
        assert _positive(s["wall_s"]) and _positive(s["peak_rss_mb"]) and s["items"] > 0
        assert s["wall_s"] <= s["process_wall_s"]  # the night runs inside its process
    assert r["scaling"][1]["items"] == sizes[1] * r["scaling"][0]["items"]


def test_markdown(quick_results):
    out, r = quick_results
    md = (out / "RESULTS.md").read_text()
    for heading in ("## Machine", "## Quality", "## Throughput", "## Scaling", "## Training cost", "## GPU"):
        assert heading in md
    assert r["machine"]["cpu"] in md and "reports/evaluation.json" in md and "python -m bench" in md
    assert "Not measured" in md or r.get("gpu")


def test_engines_section_compares_local_and_ray(quick_results):
    out, r = quick_results
    e = r["engines"]
    if "skipped" in e:
        pytest.skip(e["skipped"])
    for mode in ("warm", "cold"):
        assert e[f"{mode}_outputs_equal"] is True  # the same rows from both engines
        assert _positive(e[f"{mode}_local"]["items_per_s"]) and _positive(e[f"{mode}_ray"]["items_per_s"])
        # the ratio is taken on unrounded walls; the recorded walls carry 2 decimals
        wl, wr = e[f"{mode}_local"]["wall_s"], e[f"{mode}_ray"]["wall_s"]
        lo, hi = max(wl - 0.005, 0) / (wr + 0.005), (wl + 0.005) / max(wr - 0.005, 1e-9)
        assert 0.99 * lo <= e[f"{mode}_ray_over_local"] <= 1.01 * hi
    assert e["warm_local"]["items"] > e["cold_local"]["items"]  # whole catalog warm, a slice cold
    assert "Local vs Ray engine" in (out / "RESULTS.md").read_text()


def test_nightly_events_in_order(quick_run, tmp_path):
    """The product delivers every stage of a nightly run, nested and in order, to a listener."""
    from bench.scaling import replicate_catalog
    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.config import load_config
    from catalog_classifier.nightly.batch.job import run_nightly

    out, _ = quick_run
    clf = CatalogClassifier.load(out / "work" / "models" / "flipkart1050-L1")  # the model the bench fitted
    csv = tmp_path / "slice.csv"
    replicate_catalog(DEMO_CSV, csv, 1, rows=24)
    cfg = load_config(ROOT / "data" / "flipkart1050" / "catalog.yaml").with_overrides(
        image={"cache_dir": str(tmp_path / "cache")}, cache={"base_probas_dir": str(tmp_path / "cache")},
        catalog={"image_root": str(DEMO_IMAGES)},
        rules={"rules_dir": str(ROOT / "rules")}, tracking={"enabled": False}, nightly={"chunk_size": 10})
    got: list[tuple[str, float, dict]] = []
    timer = StageTimer()
    t0 = time.perf_counter()
    with events.listening(lambda *e: got.append(e)), events.listening(timer):
        res = run_nightly(csv, tmp_path / "night" / "2000-01-01", clf, cfg, force=True, progress=False,
                          date="2000-01-01")
    wall = time.perf_counter() - t0
    assert sum(res.counts.values()) == 24
    names = [s for s, _, _ in got]
    assert set(names) <= set(FINE) | {"predict.base"}
    # three chunks of 10, 10, 4 rows: per chunk the image stages, then the prediction stages, then its part;
    # every row is new to the text models' content cache: looked up, computed, stored
    per_chunk = [s for s in names if s.startswith(("predict.", "nightly.write_part"))]
    one = ["predict.inputs", "predict.base_cache", *["predict.base"] * len(clf.base_names), "predict.base_cache",
           "predict.meta", "predict.route", "predict.explain", "nightly.write_part"]
    assert per_chunk == one * 3
    models = [i["model"] for s, _, i in got if s == "predict.base"]
    assert models == list(clf.base_names) * 3
    assert names[-4:] == ["nightly.merge", "nightly.drift", "nightly.queue", "nightly.report"]
    assert names.index("image.forward") < names.index("image.embed") < names.index("predict.inputs")
    depth = {s: i["depth"] for s, _, i in got}
    assert depth["image.forward"] > depth["image.embed"] > depth["predict.inputs"] == depth["nightly.merge"] == 0
    assert all(sec >= 0 for _, sec, _ in got)
    # the timer counts the main thread (cache writes run on the embedder's writer thread)
    inclusive = sum(sec for _, sec, i in got if i["depth"] == 0 and i["thread"] == threading.main_thread().name)
    assert sum(timer.totals.values()) == pytest.approx(inclusive, rel=1e-6, abs=1e-6)  # exclusive parts add up
    assert inclusive <= wall
    assert not events._listeners  # both listeners gone after their blocks


def test_exclusive_times_subtract_nested_stages():
    timer = StageTimer()
    phases = ExclusiveTimes(phase_key)
    with events.listening(timer), events.listening(phases):
        with events.stage("fit.stack"):
            with events.stage("fit.base", model="char_cnn"):
                time.sleep(0.03)
            with events.stage("image.embed"):  # the embed phase, its nested stages included
                with events.stage("image.forward"):
                    time.sleep(0.02)
            time.sleep(0.01)
        with events.stage("nightly.merge"):
            time.sleep(0.01)
    sec = {n: s for n, s, _ in phases.events}  # inclusive seconds as delivered, each stage once
    assert [n for n, _, _ in phases.events] == ["fit.base", "image.forward", "image.embed", "fit.stack",
                                                "nightly.merge"]  # children end first
    assert sec["fit.base"] >= 0.03 and sec["image.forward"] >= 0.02 and sec["fit.stack"] >= 0.06
    assert phases.totals["char_cnn"] == pytest.approx(sec["fit.base"], abs=1e-9)
    assert phases.totals["meta"] == pytest.approx(sec["fit.stack"] - sec["fit.base"] - sec["image.embed"], abs=1e-9)
    assert phases.totals["embed"] == pytest.approx(sec["image.embed"], abs=1e-9)
    assert set(phases.totals) == {"char_cnn", "meta", "embed"}  # merge is no training phase
    assert timer.totals["cnn"] == pytest.approx(sec["image.forward"], abs=1e-9)
    assert timer.totals["decode"] == pytest.approx(sec["image.embed"] - sec["image.forward"], abs=1e-9)
    assert timer.totals["fit.stack"] == pytest.approx(sec["fit.stack"] - sec["fit.base"] - sec["image.embed"],
                                                      abs=1e-9)
    assert timer.totals["write"] == pytest.approx(sec["nightly.merge"], abs=1e-9)
    assert sum(timer.totals.values()) == pytest.approx(sec["fit.stack"] + sec["nightly.merge"], abs=1e-9)
    coarse, fine = timer.rollup(sum(timer.totals.values()) + 1.0)
    assert fine["untimed"] == pytest.approx(1.0, abs=1e-3)
    assert coarse["cnn"] == pytest.approx(timer.totals["cnn"], abs=1e-3)
    # fit.stack and fit.base are no nightly stages: charged under their own names, rolled up to other
    assert coarse["other"] == pytest.approx(1.0 + timer.totals["fit.stack"] + timer.totals["fit.base"], abs=2e-3)
    assert sum(coarse.values()) == pytest.approx(sum(timer.totals.values()) + 1.0, abs=5e-3)


def test_hook_is_idle_without_listeners():
    assert not events._listeners
    assert events.stage("predict.meta") is events.stage("image.forward", images=3)  # one shared no-op
    got = []
    stop = events.subscribe(lambda *e: got.append(e))
    with events.stage("predict.meta", n=1):
        pass
    stop()
    with events.stage("predict.meta"):
        pass
    assert [(s, i["n"], i["depth"]) for s, _, i in got] == [("predict.meta", 1, 0)]


def test_benchmark_is_outside_the_product():
    from setuptools import find_packages

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'include = ["catalog_classifier*", "stacking*"]' in pyproject
    packages = find_packages(str(ROOT), include=["catalog_classifier*", "stacking*"])
    assert "catalog_classifier" in packages and not any(p.split(".")[0] == "bench" for p in packages)
    assert not (ROOT / "catalog_classifier" / "bench").exists()
    for src in [*(ROOT / "catalog_classifier").rglob("*.py"), *(ROOT / "stacking").rglob("*.py")]:
        text = src.read_text()
        assert "import bench" not in text and "from bench" not in text, src
    from catalog_classifier.cli import app as product_cli

    assert "bench" not in {c.name or c.callback.__name__ for c in product_cli.registered_commands}
