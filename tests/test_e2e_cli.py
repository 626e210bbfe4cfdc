"""End to end through the CLI on the bundled catalog:
train -> register -> nightly -> export review queue -> import reviewer labels -> retrain -> promote.

Everything MLflow writes goes to tmp_path (sqlite store, artifact folder, model cache: the test
runs from tmp_path so relative caches land there too).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from catalog_classifier.cli import app

from conftest import DEMO_CSV, fast_config
from nightly_helpers import raw_rows, write_csv


def invoke(*args: str) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, f"{' '.join(map(str, args[:2]))} failed ({res.exit_code}):\n{res.output}"
    return res.output


@pytest.mark.slow
def test_train_nightly_review_labels_retrain_promote(demo_catalog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = fast_config(
        tracking={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": str(tmp_path / "mlruns")},
        labels={"store": str(tmp_path / "labels" / "labels.parquet")},
        nightly={"chunk_size": 64, "audit_rate": 0.05},
        # a floor above any reachable score makes "degraded" certain, and a negative margin lets the
        # challenger win whatever the draw: this test is about the plumbing; test_lifecycle covers the rules
        lifecycle={"floor": 1.01, "margin": -1.0, "min_fresh_labels": 5},
    )
    conf = tmp_path / "run.json"
    conf.write_text(cfg.dumps())
    items = demo_catalog.items
    night_items = items.sample(frac=0.2, random_state=5)
    train_csv = write_csv(raw_rows(items.drop(night_items.index)["item_id"]), tmp_path / "train.csv")
    night_csv = write_csv(raw_rows(night_items["item_id"]), tmp_path / "night.csv")
    true = dict(zip(items["item_id"], items["category"].str.split(" > ").str[0]))

    # train registers version 1, which becomes champion (the first registered version)
    invoke("train", "--catalog", train_csv, "--config", conf, "--out", tmp_path / "models" / "v1")
    assert "champion" in invoke("models", "list", "-c", conf)

    # nightly with the champion from the registry; the review queue is exported
    invoke("nightly", "--catalog", night_csv, "--out", tmp_path / "night" / "2026-11-24", "--config", conf,
           "--no-progress")
    night = tmp_path / "night" / "2026-11-24"
    pred = pd.read_parquet(night / "predictions.parquet")
    assert len(pred) == len(night_items) and set(pred["model_version"].astype(str)) == {"1"}
    manifest = night / "review" / "review_queue.image.manifest.jsonl"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert len(lines) >= 10 and {"source-ref", "predicted-category-metadata"} <= set(lines[0])
    assert (night / "review" / "review_queue.labelstudio.json").exists()

    # reviewers label most of the queue in Ground Truth; its output manifest comes back
    labeled = lines[:-2]
    out = tmp_path / "gt-output.manifest"
    with out.open("w") as f:
        for line in labeled:
            label = true[line["item_id"]]
            line["catalog-review"] = 0
            line["catalog-review-metadata"] = {
                "class-name": label, "confidence": 0.95, "type": "groundtruth/image-classification",
                "job-name": "labeling-job/catalog-review", "human-annotated": "yes",
                "creation-date": "2026-11-24T09:00:00.000000"}
            f.write(json.dumps(line) + "\n")
    imported = invoke("labels", "import", out, "-c", conf)
    assert f"{len(labeled)} added" in imported

    # retrain judges v1 on the fresh labels, trains a challenger and promotes it
    res = CliRunner().invoke(app, ["retrain", "--catalog", str(train_csv), "--catalog", str(night_csv),
                                   "-c", str(conf), "--out", str(tmp_path / "models" / "challenger")])
    assert res.exit_code == 0, res.output
    assert "promoted challenger v2" in res.output and f"{len(labeled)} labeled catalog items" in res.output

    listing = invoke("models", "list", "-c", conf, "--json")
    versions = {r["version"]: r for r in json.loads(listing)}
    assert versions[2]["aliases"] == ["champion"] and versions[1]["aliases"] == []
    log = [json.loads(x) for x in (tmp_path / "mlruns" / "alias_log.jsonl").read_text().splitlines()]
    assert [(e["from_version"], e["to_version"], e["action"]) for e in log] == [(None, 1, "promote"),
                                                                               (1, 2, "retrain")]
    assert "challenger" in log[1]["reason"] and "held-out" in log[1]["reason"]

    # and back, should the new champion misbehave
    assert "v2 -> v1" in invoke("models", "rollback", "--reason", "e2e check", "-c", conf)
