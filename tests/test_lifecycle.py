"""Model lifecycle in MLflow: champion alias moves with an append-only log, and retraining.

Every test uses its own sqlite tracking store and artifact folder under tmp_path, so the
repository's mlflow.db and mlruns/ are never touched.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from catalog_classifier.nightly.lifecycle import aliases
from catalog_classifier.nightly.review.labels import import_labels
from catalog_classifier.nightly.lifecycle.retrain import champion_record, retrain, split_holdout

from conftest import fast_config


def tmp_config(tmp_path: Path, **sections):
    return fast_config(tracking={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                 "artifact_location": str(tmp_path / "mlruns")},
                       labels={"store": str(tmp_path / "labels.parquet")},
                       cache={"models_dir": str(tmp_path / "cache")}, **sections)


def register(cfg, model_dir: Path, metrics: dict, tmp_path: Path, name: str) -> int:
    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.tracking import log_model_version

    d = tmp_path / "versions" / name  # each version from its own directory, as `train --out` makes them
    shutil.copytree(model_dir, d)
    return log_model_version(CatalogClassifier.load(d), d, metrics, {"test": name}, cfg.tracking)["version"]


@pytest.fixture
def registry(tmp_path, trained_model_dir):
    cfg = tmp_config(tmp_path)
    v1 = register(cfg, trained_model_dir, {"oof_macro_f1": 0.90, "oof_accuracy": 0.93}, tmp_path, "v1")
    v2 = register(cfg, trained_model_dir, {"oof_macro_f1": 0.92, "oof_accuracy": 0.94}, tmp_path, "v2")
    return cfg, v1, v2


def test_promote_and_rollback_move_the_alias_and_append_the_log(registry, tmp_path, monkeypatch):
    cfg, v1, v2 = registry
    monkeypatch.setenv("USER", "reviewer-on-duty")
    c = aliases.client(cfg)
    assert aliases.current_champion(cfg) is None
    aliases.promote(cfg, v1, reason="first model")
    aliases.promote(cfg, v2, reason="better OOF macro-F1")
    assert aliases.current_champion(cfg) == v2
    assert int(c.get_model_version_by_alias("catalog-classifier", "champion").version) == v2
    assert aliases.promote(cfg, v2, reason="again") is None  # no move, no log line

    entry = aliases.rollback(cfg, reason="v2 mislabels towels")
    assert (entry["from_version"], entry["to_version"], entry["action"]) == (v2, v1, "rollback")
    assert aliases.current_champion(cfg) == v1
    with pytest.raises(aliases.LifecycleError, match="no earlier champion"):
        aliases.rollback(cfg)
    with pytest.raises(aliases.LifecycleError, match="no version 99"):
        aliases.promote(cfg, 99)

    log_path = tmp_path / "mlruns" / "alias_log.jsonl"
    assert aliases.alias_log_path(cfg) == log_path
    log = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert [(e["from_version"], e["to_version"]) for e in log] == [(None, v1), (v1, v2), (v2, v1)]
    assert [e["reason"] for e in log] == ["first model", "better OOF macro-F1", "v2 mislabels towels"]
    for e in log:
        assert e["user"] and e["model"] == "catalog-classifier" and e["alias"] == "champion"
        assert pd.Timestamp(e["time"]).tzinfo is not None
    tags = c.get_model_version("catalog-classifier", str(v1)).tags
    assert tags["champion.promote_reason"] == "v2 mislabels towels" and tags["champion.promoted_from"] == str(v2)
    assert "champion.demoted_at" in c.get_model_version("catalog-classifier", str(v2)).tags

    rows = aliases.list_versions(cfg)
    assert [r["version"] for r in rows] == [v2, v1]
    assert rows[1]["aliases"] == ["champion"] and rows[0]["metrics"]["oof_macro_f1"] == pytest.approx(0.92)
    assert "champion" in aliases.format_versions(rows)


def test_champion_history_goes_back_step_by_step():
    def e(action, a, b):
        return {"action": action, "from_version": a, "to_version": b}

    log = [e("promote", None, 1), e("promote", 1, 2), e("retrain", 2, 3), e("rollback", 3, 2)]
    assert aliases.champion_history(log) == [1, 2]
    assert aliases.champion_history(log + [e("rollback", 2, 1)]) == [1]
    assert aliases.champion_history(log + [e("promote", 2, 4)]) == [1, 2, 4]


def test_models_cli_list_promote_rollback(registry, tmp_path):
    from typer.testing import CliRunner

    from catalog_classifier.cli import app

    cfg, v1, v2 = registry
    conf = tmp_path / "run.yaml"
    conf.write_text(yaml.safe_dump({"tracking": {"tracking_uri": cfg.tracking.tracking_uri,
                                                 "artifact_location": cfg.tracking.artifact_location}}))
    run = CliRunner().invoke
    res = run(app, ["models", "promote", str(v1), "--reason", "first", "-c", str(conf)])
    assert res.exit_code == 0 and "v1" in res.output, res.output
    res = run(app, ["models", "promote", str(v2), "--reason", "new data", "-c", str(conf)])
    assert res.exit_code == 0 and f"v{v1} -> v{v2}" in res.output
    res = run(app, ["models", "list", "-c", str(conf)])
    assert res.exit_code == 0 and "champion" in res.output and "oof_macro_f1" in res.output
    res = run(app, ["models", "rollback", "--reason", "regression", "-c", str(conf)])
    assert res.exit_code == 0 and f"v{v2} -> v{v1}" in res.output
    assert aliases.current_champion(cfg) == v1
    res = run(app, ["models", "promote", "42", "-c", str(conf)])
    assert res.exit_code == 2 and "no version 42" in res.output
    assert len((tmp_path / "mlruns" / "alias_log.jsonl").read_text().splitlines()) == 3


def test_split_holdout_keeps_near_duplicates_together(demo_catalog):
    items = demo_catalog.items
    hold = split_holdout(items, 0.3, seed=1)
    assert 0.3 <= hold.mean() < 0.35
    from catalog_classifier.catalog.cleaning import title_key

    keys = items["title"].map(title_key)
    assert not (set(keys[hold]) & set(keys[~hold]))


@pytest.fixture
def champion_with_fresh_labels(registry, demo_catalog, heldout_items):
    """v1 is champion; the held-out demo items come back labeled by reviewers after its training."""
    cfg, v1, _ = registry
    aliases.promote(cfg, v1, reason="first")
    path = Path(cfg.labels.store).with_name("reviewed.csv")
    pd.DataFrame({"item_id": heldout_items["item_id"],
                  "category": heldout_items["category"].str.split(" > ").str[0]}).to_csv(path, index=False)
    assert import_labels(path, cfg.labels.store, None).added == len(heldout_items)
    return cfg, v1


def test_retrain_does_nothing_when_the_champion_holds_up(champion_with_fresh_labels, demo_catalog, tmp_path):
    cfg, v1 = champion_with_fresh_labels
    rec = champion_record(cfg)
    assert rec["version"] == v1 and rec["recorded"] == pytest.approx(0.90) and rec["recorded_key"] == "oof_macro_f1"

    healthy = cfg.with_overrides(lifecycle={"floor": 0.5, "tolerance": 0.5})
    res = retrain(healthy, demo_catalog.items, demo_catalog.image_root)
    assert (res.decision, res.exit_code) == ("healthy", 0)
    assert "no degradation" in res.message and res.figures["n_fresh"] == 210
    assert res.figures["champion_fresh_score"] > 0.5

    few = cfg.with_overrides(lifecycle={"min_fresh_labels": 1000})
    res = retrain(few, demo_catalog.items, demo_catalog.image_root)
    assert (res.decision, res.exit_code) == ("not_enough_labels", 0)

    import mlflow

    runs = mlflow.search_runs(experiment_names=["catalog-classifier-retrain"])
    assert sorted(runs["tags.decision"]) == ["healthy", "not_enough_labels"]


@pytest.mark.slow
def test_retrain_keeps_the_champion_and_alerts_when_the_challenger_is_not_better(
        champion_with_fresh_labels, demo_catalog, tmp_path):
    cfg, v1 = champion_with_fresh_labels
    # a floor no score reaches (above 1: the champion now scores 1.0 on these fresh labels) forces
    # the challenger; a margin no model reaches keeps the champion
    strict = cfg.with_overrides(lifecycle={"floor": 1.01, "margin": 1.0})
    versions_before = [r["version"] for r in aliases.list_versions(cfg)]
    res = retrain(strict, demo_catalog.items, demo_catalog.image_root, out_dir=tmp_path / "challenger")
    assert (res.decision, res.exit_code) == ("champion_kept", 1)
    f = res.figures
    assert f["n_fresh"] == 210 and 100 <= f["n_holdout"] <= 115
    for key in ("champion_holdout_score", "challenger_holdout_score", "champion_fresh_score"):
        assert f"{f[key]:.4f}" in res.message
    assert res.message.startswith("ALERT") and "floor 1.01" in res.message
    assert aliases.current_champion(cfg) == v1
    assert [r["version"] for r in aliases.list_versions(cfg)] == versions_before  # loser not registered
    assert (tmp_path / "challenger" / "stack" / "stack.json").exists()
    # the challenger never trained on a held-out fresh label (nor on a near-duplicate of one)
    assert f["n_train"] <= len(demo_catalog.items) - f["n_holdout"]

    import mlflow

    runs = mlflow.search_runs(experiment_names=["catalog-classifier-retrain"])
    assert runs["tags.decision"].tolist() == ["champion_kept"]
    assert runs["metrics.challenger_holdout_score"].iloc[0] == pytest.approx(f["challenger_holdout_score"])
