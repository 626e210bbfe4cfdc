"""The nightly job on real held-out demo rows: exactly once, no-op re-run, force, kill -9 + resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.nightly.batch.commit import COLUMNS
from catalog_classifier.nightly.batch.manifest import NightlyError
from catalog_classifier.nightly.batch.job import run_nightly
from catalog_classifier.tracking import LoadedModel

from conftest import ROOT
from nightly_helpers import night_config, raw_rows, read_predictions, write_csv

REQUIRED = ["item_id", "row", "status", "reason", "category", "confidence", "top1", "top1_proba", "top2",
            "top2_proba", "top3", "top3_proba", "rule_id", "image_issue", "model_name", "model_version", "run_id"]


@pytest.fixture(scope="module")
def model(trained_model_dir):
    return CatalogClassifier.load(trained_model_dir)


@pytest.fixture()
def heldout_csv(heldout_items, tmp_path) -> Path:
    return write_csv(raw_rows(heldout_items["item_id"]), tmp_path / "tonight.csv")


def test_every_row_once_rerun_is_noop_force_recomputes(model, heldout_csv, tmp_path):
    raw = pd.read_csv(heldout_csv, dtype=str, keep_default_na=False)
    out = tmp_path / "nights" / "2024-01-02"
    res = run_nightly(heldout_csv, out, model, night_config(64), progress=False, date="2024-01-02")
    pred = read_predictions(out)
    assert set(REQUIRED) <= set(pred.columns) and list(pred.columns) == COLUMNS
    assert pred["row"].tolist() == list(range(len(raw)))  # every input row exactly once, in order
    assert pred["item_id"].tolist() == raw["uniq_id"].tolist()
    assert set(pred["status"]) <= {"accepted", "review"} and (pred["status"] == "review").any()
    assert pred.loc[pred["status"] == "review", "reason"].notna().all()
    assert pred["run_id"].eq(res.run_id).all() and pred["model_name"].notna().all()
    assert res.parts_computed == len(list((out / "parts").glob("part-*.parquet"))) == -(-len(raw) // 64)
    assert sum(res.counts.values()) == len(raw)

    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert s["counts"] == res.counts and 0 < s["review_rate"] < 1
    assert sum(v["total"] for v in s["by_category"].values()) == len(raw)
    for what in ("category", "confidence"):
        block = report["drift"]["training"][what]
        assert 0 <= block["p_value"] <= 1 and block["psi"] >= 0 and block["n_current"] == len(raw)
    assert report["drift"]["previous"] is None  # first night in this folder
    assert "Drift" in (out / "report.md").read_text()
    q = report["review_queue"]
    assert q["review"] == res.counts["review"] and q["audit"] >= 1
    assert all((out / p).is_file() for p in q["files"].values())

    # a finished night is left alone
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_nightly(heldout_csv, out, model, night_config(64), progress=False)
    assert again.skipped and again.run_id == res.run_id
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps

    # --force recomputes every chunk, with the same rows
    forced = run_nightly(heldout_csv, out, model, night_config(64), force=True, progress=False)
    assert not forced.skipped and forced.parts_computed == res.parts_computed and forced.parts_reused == 0
    pd.testing.assert_frame_equal(read_predictions(out), pred)


def test_every_output_is_fsynced_before_its_rename_and_its_folder_before_the_night_completes(
        model, heldout_csv, tmp_path, monkeypatch):
    """Durability of a night: each file's bytes are fsynced before it is renamed into place, and each
    folder a file was renamed into is fsynced after that rename and before the manifest that says
    ``complete``; a part's checksum is renamed before the part. Folders holding several outputs (a
    part and its checksum, the review exports) are fsynced once for all of them."""
    import catalog_classifier.io_utils as io

    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def logged_replace(src, dst):
        events.append(("rename", str(src), str(dst)))
        return replace(src, dst)

    monkeypatch.setattr(io.os, "fsync", logged_fsync)
    monkeypatch.setattr(io.os, "replace", logged_replace)
    out = tmp_path / "night"
    run_nightly(heldout_csv, out, model, night_config(64), progress=False)
    renames = [(k, e) for k, e in enumerate(events) if e[0] == "rename"]
    assert {Path(e[2]).name for _, e in renames} >= {"part-00000.parquet", "part-00000.parquet.sha256",
                                                       "predictions.parquet", "review_queue.csv", "report.json"}
    complete = max(k for k, e in renames if Path(e[2]).name == "manifest.json")
    for k, (_, src, dst) in renames:
        assert ("fsync", str(Path(src).resolve())) in events[:k], f"{dst} renamed before its bytes were fsynced"
        folder = ("fsync", str(Path(dst).parent.resolve()))
        later = events[k + 1:]
        assert folder in later, f"{dst}: its folder is never fsynced after the rename"
        assert k == complete or later.index(folder) + k + 1 < complete, f"{dst} durable only after complete"
    names = [Path(e[2]).name for _, e in renames]
    assert names.index("part-00000.parquet.sha256") < names.index("part-00000.parquet")
    folder_syncs = [e for e in events if e[0] == "fsync" and Path(e[1]).is_dir()]
    assert len(folder_syncs) < len(renames)  # shared, not one per file
    assert sum(e[1].endswith(os.sep + "review") for e in folder_syncs) == 1


def test_other_input_or_model_is_refused_unless_forced(model, heldout_csv, tmp_path):
    out = tmp_path / "night"
    run_nightly(heldout_csv, out, model, night_config(256), progress=False)
    before = read_predictions(out)
    raw = pd.read_csv(heldout_csv, dtype=str, keep_default_na=False)
    changed = write_csv(raw.iloc[:-1], tmp_path / "changed.csv")  # same rows minus the last
    with pytest.raises(NightlyError, match=r"input differs.*--force"):
        run_nightly(changed, out, model, night_config(256), progress=False)
    other = LoadedModel(model, "catalog-classifier", 7, "abc123", "models:/catalog-classifier/7")
    with pytest.raises(NightlyError, match="model differs"):
        run_nightly(heldout_csv, out, other, night_config(256), progress=False)
    with pytest.raises(NightlyError, match=r"config differs in \['chunk_size'\]"):
        run_nightly(heldout_csv, out, model, night_config(128), progress=False)
    pd.testing.assert_frame_equal(read_predictions(out), before)  # refusals touch nothing
    res = run_nightly(changed, out, model, night_config(256), force=True, progress=False)
    assert len(read_predictions(out)) == len(before) - 1 and res.counts and not res.skipped


def test_previous_night_drift_and_cli(model, trained_model_dir, heldout_csv, tmp_path):
    from typer.testing import CliRunner

    from catalog_classifier.cli import app

    nights = tmp_path / "nights"
    run_nightly(heldout_csv, nights / "2024-01-01", model, night_config(256), progress=False)
    cfg_file = tmp_path / "run.json"
    cfg_file.write_text(night_config(256).dumps())
    r = CliRunner().invoke(app, ["nightly", "--catalog", str(heldout_csv), "--out", str(nights / "2024-01-02"),
                                 "--model", str(trained_model_dir), "--config", str(cfg_file), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["skipped"] is False
    report = json.loads((nights / "2024-01-02" / "report.json").read_text())
    prev = report["drift"]["previous"]  # same catalog, same model: nothing moved
    assert report["drift"]["previous_dir"].endswith("2024-01-01")
    assert prev["category"]["p_value"] == pytest.approx(1.0) and prev["confidence"]["statistic"] == 0
    assert not prev["drift"]
    (tmp_path / "x.txt").write_text(heldout_csv.read_text())
    bad = CliRunner().invoke(app, ["nightly", "--catalog", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o"),
                                   "--model", str(trained_model_dir), "--config", str(cfg_file)])
    assert bad.exit_code == 2 and "unknown file type '.txt'" in bad.output and not (tmp_path / "o").exists()


def test_mlflow_gets_the_nights_metrics(model, heldout_csv, tmp_path):
    from mlflow import MlflowClient

    tracking = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": str(tmp_path / "mlruns")}
    res = run_nightly(heldout_csv, tmp_path / "night", model, night_config(256, tracking=tracking), progress=False)
    run_id = res.manifest["mlflow_run_id"]
    assert run_id and json.loads((tmp_path / "night" / "report.json").read_text())["mlflow_run_id"] == run_id
    run = MlflowClient(tracking_uri=tracking["tracking_uri"]).get_run(run_id)
    m = run.data.metrics
    assert m["rows"] == sum(res.counts.values()) and m["n_review"] == res.counts["review"]
    assert 0 <= m["drift_training_confidence_p_value"] <= 1 and "review_rate" in m
    assert run.data.tags["night_run_id"] == res.run_id


def _runner(csv: Path, out: Path, model_dir: Path, cfg: Path) -> list[str]:
    return [sys.executable, "-m", "catalog_classifier", "nightly", "--catalog", str(csv), "--out", str(out),
            "--model", str(model_dir), "--config", str(cfg), "--no-progress"]


def test_kill_9_midway_damaged_part_then_rerun_equals_uninterrupted_run(trained_model_dir, heldout_csv, tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(night_config(8).dumps())  # 8 rows a chunk: ~27 parts for 210 rows
    env = {**os.environ, "CATALOG_CLASSIFIER_THREADS": "1"}
    ref, night = tmp_path / "ref", tmp_path / "night"
    subprocess.run(_runner(heldout_csv, ref, trained_model_dir, cfg), cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=600)

    proc = subprocess.Popen(_runner(heldout_csv, night, trained_model_dir, cfg), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((night / "parts").glob("part-*.parquet")):
        assert proc.poll() is None, "runner exited before committing a part"
        assert time.monotonic() < deadline, "no part committed in time"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    committed = len(list((night / "parts").glob("part-*.parquet")))
    assert not (night / "predictions.parquet").exists(), "the run finished before the kill"
    assert json.loads((night / "manifest.json").read_text())["status"] == "running"
    first = night / "parts" / "part-00000.parquet"  # a committed part damaged after the crash
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])

    done = subprocess.run(_runner(heldout_csv, night, trained_model_dir, cfg), cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True, timeout=600)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["parts_reused"] >= committed - 1 and summary["parts_computed"] >= 2
    assert [(p["part"], p["reason"].split(" (")[0]) for p in summary["parts_recomputed"]] == [
        ("part-00000.parquet", "checksum mismatch")]
    assert json.loads((night / "report.json").read_text())["parts_recomputed"] == summary["parts_recomputed"]
    a, b = read_predictions(ref), read_predictions(night)
    assert b["row"].is_unique and len(b) == len(pd.read_csv(heldout_csv))
    pd.testing.assert_frame_equal(a, b)  # row for row, run id included
    pd.testing.assert_frame_equal(pd.read_csv(ref / "review" / "review_queue.csv"),
                                  pd.read_csv(night / "review" / "review_queue.csv"))
    assert not list(night.rglob("*.tmp"))  # the killed run's temp files are gone


def test_night_resumed_after_an_upgrade_redoes_parts_of_the_old_schema(model, heldout_csv, tmp_path):
    """A night killed under an older version (its parts lack today's columns) and resumed after the
    upgrade recomputes those parts, with a reason, instead of failing at the merge."""
    import pyarrow.parquet as pq

    from catalog_classifier.nightly.batch.commit import checksum_path
    from catalog_classifier.nightly.batch.manifest import file_sha256

    out = tmp_path / "night"
    run_nightly(heldout_csv, out, model, night_config(64), progress=False, date="2024-01-02")
    ref = read_predictions(out)
    # what the older version left: a committed part without the explanation columns, its own checksum,
    # a running manifest and no merged output
    old = out / "parts" / "part-00001.parquet"
    pq.write_table(pq.read_table(old).drop_columns(["why", "why_json"]), old)
    checksum_path(old).write_text(file_sha256(old) + "\n", encoding="ascii")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "predictions.parquet").unlink()

    res = run_nightly(heldout_csv, out, model, night_config(64), progress=False)
    assert res.parts_computed == 1 and res.parts_reused == -(-len(ref) // 64) - 1
    [redo] = res.parts_recomputed
    assert redo["part"] == old.name and "missing why, why_json" in redo["reason"]
    assert redo["reason"].startswith("written with another part schema")
    pd.testing.assert_frame_equal(read_predictions(out), ref)


def test_the_catalog_is_read_once_and_the_queue_shows_its_validated_fields(model, heldout_csv, tmp_path,
                                                                          monkeypatch):
    """The review queue takes the item fields from the committed parts: one pass over the catalog per
    night, and every queued row shows the fields validation gave that catalog row."""
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.io_utils import unescape_cell
    from catalog_classifier.nightly.batch.chunks import CatalogStream

    passes = []
    chunks = CatalogStream.chunks
    monkeypatch.setattr(CatalogStream, "chunks", lambda self: (passes.append(1), chunks(self))[1])
    cfg = night_config(64)
    out = tmp_path / "night"
    run_nightly(heldout_csv, out, model, cfg, progress=False, date="2024-01-02")
    assert len(passes) == 1
    queue = pd.read_csv(out / "review" / "review_queue.csv", dtype=str, keep_default_na=False)
    assert len(queue) > 0
    items = read_catalog(heldout_csv, cfg.catalog).items.set_index("item_id")
    for col in ("title", "brand", "url", "domain"):
        want = items.loc[queue["item_id"], col].fillna("").astype(str).tolist()
        assert [unescape_cell(v) for v in queue[col]] == want, col
    price = pd.to_numeric(queue["price"].replace("", None)).to_numpy(dtype=float)
    assert np.array_equal(price, items.loc[queue["item_id"], "price"].to_numpy(dtype=float), equal_nan=True)
    # the attribute list the text models read: whole, or its first whole lines and a "…" line
    from catalog_classifier.nightly.review.queue import SPEC_CHARS
    shown = [unescape_cell(v) for v in queue["specs"]]
    full = items.loc[queue["item_id"], "specs"].fillna("").astype(str).tolist()
    assert sum(bool(f) for f in full) >= 0.9 * len(full)
    for got, want in zip(shown, full):
        if len(want) <= SPEC_CHARS:
            assert got == want
        else:
            head = got.removesuffix("\n…")
            assert head != got and want.startswith(head) and 0 < len(head) <= SPEC_CHARS
            first_line = want.split("\n")[0]
            assert want[len(head)] == "\n" if len(first_line) <= SPEC_CHARS else head == first_line[:len(head)]
