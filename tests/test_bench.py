"""`catalog-classifier bench --quick` end to end: the harness runs and writes the documented layout.

Figures from --quick are not meaningful (tiny subsamples, 2 folds, 1 epoch); this checks the
plumbing: every section, the JSON layout of issue 4, sane values, and the Markdown report.
"""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from catalog_classifier.bench.stages import STAGES, StageTimer, install
from catalog_classifier.cli import app
from conftest import SHARED

QUALITY_KEYS = {"catalog", "level", "model", "accuracy", "macro_f1", "coverage_at_095", "precision_at_095",
                "coverage_at_098", "precision_at_098", "n_items", "n_categories"}
THROUGHPUT_KEYS = {"device", "batch", "cold_items_per_s", "warm_items_per_s", "cnn_forward_limit_items_per_s",
                   "stage_seconds"}


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("bench")
    # small problems: one BLAS/OpenMP thread avoids oversubscription on a shared 2-core runner
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CATALOG_CLASSIFIER_THREADS"):
        monkeypatch_module.setenv(var, "1")
    res = CliRunner().invoke(app, ["bench", "--quick", "--out", str(out / "bench"), "--work", str(out / "work"),
                                   "--note", "pytest quick run"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out / "bench", json.loads((out / "bench" / "results.json").read_text())


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_layout_and_sections(quick_results):
    _, r = quick_results
    assert {"machine", "versions", "date", "quality", "throughput", "scaling", "training"} <= set(r)
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
    assert r["versions"]["torch"] and r["versions"]["lightgbm"] and r["mode"] == "quick"
    assert "gpu" not in r or r["gpu"]["device"].startswith("cuda")
    assert r["notes"] == ["pytest quick run"]


def test_quality_records(quick_results):
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


def test_throughput_and_scaling(quick_results):
    _, r = quick_results
    t = r["throughput"]
    assert THROUGHPUT_KEYS <= set(t) and t["device"] == "cpu" and t["batch"] > 0
    for k in ("cold_items_per_s", "warm_items_per_s", "cnn_forward_limit_items_per_s"):
        assert _positive(t[k])
    assert set(t["stage_seconds"]) == set(STAGES)
    assert t["stage_seconds"]["cnn"] > 0 and t["stage_seconds"]["decode"] > 0  # cold really ran the CNN
    assert t["warm_stage_seconds"]["cnn"] == 0  # warm: every image served from the cache
    assert t["runs"][0]["cold"]["embeddings_computed"] > 0
    total = sum(t["stage_seconds"].values())
    assert total == pytest.approx(t["runs"][0]["cold"]["wall_s"], rel=0.02, abs=0.05)
    sizes = [s["replicas"] for s in r["scaling"]]
    assert sizes == sorted(sizes) and sizes[0] == 1
    for s in r["scaling"]:
        assert _positive(s["wall_s"]) and _positive(s["peak_rss_mb"]) and s["items"] > 0
    assert r["scaling"][1]["items"] == sizes[1] * r["scaling"][0]["items"]


def test_markdown(quick_results):
    out, r = quick_results
    md = (out / "RESULTS.md").read_text()
    for heading in ("## Machine", "## Quality", "## Throughput", "## Scaling", "## Training cost", "## GPU"):
        assert heading in md
    assert r["machine"]["cpu"] in md and "reports/evaluation.json" in md
    assert "Not measured" in md or r.get("gpu")


def test_stage_timer_is_exclusive_and_restores():
    from catalog_classifier.features import embeddings

    original = embeddings.embed_forward
    timer = StageTimer()
    with install(timer):
        assert embeddings.embed_forward is not original
        outer = timer.wrap(lambda: inner(), "outer")
        inner = timer.wrap(lambda: sum(range(200_000)), "inner")
        outer()
    assert embeddings.embed_forward is original
    assert timer.totals["inner"] > 0 and timer.totals["outer"] >= 0
    coarse, fine = timer.rollup(sum(timer.totals.values()) + 1.0)
    assert coarse["other"] == pytest.approx(1.0 + timer.totals["inner"] + timer.totals["outer"], abs=1e-3)


def test_engines_section_compares_local_and_ray(quick_results):
    out, r = quick_results
    e = r["engines"]
    if "skipped" in e:
        pytest.skip(e["skipped"])
    for mode in ("warm", "cold"):
        assert e[f"{mode}_outputs_equal"] is True  # the same rows from both engines
        assert _positive(e[f"{mode}_local"]["items_per_s"]) and _positive(e[f"{mode}_ray"]["items_per_s"])
        assert e[f"{mode}_ray_over_local"] == pytest.approx(
            e[f"{mode}_local"]["wall_s"] / e[f"{mode}_ray"]["wall_s"], rel=0.05)
    assert e["warm_local"]["items"] > e["cold_local"]["items"]  # whole catalog warm, a slice cold
    assert "Local vs Ray engine" in (out / "RESULTS.md").read_text()
