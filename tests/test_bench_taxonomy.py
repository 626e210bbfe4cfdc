"""The benchmark's `taxonomy` section: leaf relabelling of real items, the quick run's block,
and `--section taxonomy` alone merging into an existing results.json."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.__main__ import app
from bench.taxonomy import split_leaves
from conftest import ROOT, SHARED, require_dataset


@pytest.fixture(scope="module")
def bigbasket_top():
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.catalog.labels import make_labels
    from catalog_classifier.config import CatalogConfig

    path = require_dataset(SHARED / "bigbasket" / "BigBasket Products.csv")
    items = read_catalog(path, CatalogConfig(adapter="bigbasket")).items.sample(3000, random_state=0)
    return make_labels(items["category"], 1, 1).dropna().reset_index(drop=True)


@pytest.mark.parametrize("leaves", [100, 300, 1000])
def test_split_leaves_reaches_the_count_inside_real_classes(bigbasket_top, leaves):
    out = split_leaves(bigbasket_top, leaves, seed=0)
    assert out.nunique() == leaves and len(out) == len(bigbasket_top)
    parent = out.str.rsplit(" > ", n=1).str[0]
    assert (parent == bigbasket_top).all()  # every sub-leaf lies inside its item's real class
    # bigger real classes get more leaves, and leaves of one class are near-equal in size
    per_class = out.groupby(bigbasket_top).nunique()
    sizes = bigbasket_top.value_counts()
    assert per_class[sizes.idxmax()] >= per_class[sizes.idxmin()]
    leaf_sizes = out[bigbasket_top == sizes.idxmax()].value_counts()
    assert leaf_sizes.max() - leaf_sizes.min() <= 1


def test_taxonomy_section_alone_merges_into_existing_results(tmp_path, monkeypatch):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CATALOG_CLASSIFIER_THREADS"):
        monkeypatch.setenv(var, "1")
    require_dataset(SHARED / "bigbasket" / "BigBasket Products.csv")
    out = tmp_path / "bench"
    out.mkdir()
    old = json.loads((ROOT / "bench" / "results.json").read_text())  # the committed full run
    old.pop("taxonomy", None)
    (out / "results.json").write_text(json.dumps(old))
    res = CliRunner().invoke(app, ["--quick", "--section", "taxonomy", "--out", str(out),
                                   "--work", str(tmp_path / "work")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    r = json.loads((out / "results.json").read_text())
    assert r["quality"] == old["quality"] and r["throughput"] == old["throughput"]  # kept
    assert r["scaling"] == old["scaling"] and r["engines"] == old["engines"]
    assert r["section_seconds"]["throughput"] == old["section_seconds"]["throughput"]
    secs = r["section_seconds"]
    assert secs["taxonomy"] > 0
    # a partial run does not pass for a full one: the total is the sections' sum, this run beside it
    assert secs["total_from_sections"] and 0 < secs["this_run"] < secs["total"]
    parts = ("quality_and_training", "throughput", "scaling", "engines", "taxonomy")
    assert secs["total"] == pytest.approx(sum(secs.get(k, 0) for k in parts), abs=0.2)
    t = r["taxonomy"]
    assert [x["leaves"] for x in t["runs"]] == [20, 40]
    for x in t["runs"]:
        assert x["meta"] == "rerank" and x["wall_s"] > 0 and x["peak_rss_mb"] > 0
    ratio = t["summary"]["ratios"][0]
    assert ratio["leaf_ratio"] == 2.0 and ratio["time_ratio"] > 0
    md = (out / "RESULTS.md").read_text()
    assert "Large taxonomies" in md
    # the report says which sections this run measured, not "full run"
    assert r["sections_run"] == ["taxonomy"]
    assert "`python -m bench --quick --section taxonomy`; other sections from earlier runs" in md
