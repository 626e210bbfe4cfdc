"""``nightly --engine ray`` on a local 2-CPU Ray instance: the same rows as the local engine,
and every row once when a Ray worker is killed mid-run or the driver stops between parts."""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install '.[ray]')")

from catalog_classifier.classifier import CatalogClassifier  # noqa: E402
from catalog_classifier.nightly.batch.job import run_nightly  # noqa: E402

from conftest import DEMO_CSV  # noqa: E402
from nightly_helpers import night_config, read_predictions, write_csv  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(trained_model_dir):
    return CatalogClassifier.load(trained_model_dir)


@pytest.fixture(scope="module")
def demo_night_csv(tmp_path_factory):
    """The whole demo catalog plus what a crawl also brings: two repeated ids and a row without one."""
    raw = pd.read_csv(DEMO_CSV, dtype=str, keep_default_na=False)
    extra = raw.iloc[[5, 700]].copy()
    no_id = raw.iloc[[10]].copy()
    no_id["uniq_id"] = ""
    rows = pd.concat([raw, extra, no_id], ignore_index=True)
    return write_csv(rows, tmp_path_factory.mktemp("night") / "catalog.csv")


def ray_config(cache_dir=None, chunk_size=128):
    cfg = night_config(chunk_size).with_overrides(nightly={"engine": "ray"}, ray={"num_cpus": 2})
    return cfg.with_overrides(image={"cache_dir": str(cache_dir)}) if cache_dir else cfg


def test_ray_output_equals_local_output_row_for_row(model, demo_night_csv, tmp_path):
    local = run_nightly(demo_night_csv, tmp_path / "local", model, night_config(128), progress=False)
    # a cold embedding cache: the CNN really runs in the Ray actors
    ray_run = run_nightly(demo_night_csv, tmp_path / "ray", model, ray_config(tmp_path / "emb"), progress=False)
    a, b = read_predictions(tmp_path / "local"), read_predictions(tmp_path / "ray")
    n = len(pd.read_csv(demo_night_csv, dtype=str))
    assert b["row"].tolist() == list(range(n))
    assert (b["status"] == "rejected").sum() == 3 and b["status"].isin(["accepted", "review"]).sum() == n - 3
    same = ["item_id", "row", "status", "reason", "category", "model_category", "top1", "top2", "top3",
            "rule_id", "image_issue"]
    pd.testing.assert_frame_equal(a[same], b[same])
    for col in ("confidence", "top1_proba", "top2_proba", "top3_proba", "threshold"):
        diff = (a[col] - b[col]).abs().fillna(0.0)
        assert diff.max() <= 1e-6, col
    assert ray_run.counts == local.counts and ray_run.parts_computed == local.parts_computed
    assert (tmp_path / "emb" / "embeddings.sqlite").is_file()  # the actors filled the shared cache
    # the review queue is built from the same rows
    qa = json.loads((tmp_path / "local" / "report.json").read_text())["review_queue"]
    qb = json.loads((tmp_path / "ray" / "report.json").read_text())["review_queue"]
    assert (qa["review"], qa["audit"]) == (qb["review"], qb["audit"])


def _scoring_actor_pids() -> list[int]:
    """Pids of the live Ray Data workers running ScoreActor (Ray's actor table; the state API
    needs the dashboard, which the engine does not start). Ray titles a worker process
    ``ray::MapWorker(MapBatches(ScoreActor))``."""
    import ray

    pids = []
    for a in ray._private.state.actors().values():
        if a["State"] != "ALIVE" or not a["Pid"]:
            continue
        try:
            title = Path(f"/proc/{a['Pid']}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ScoreActor" in title:
            pids.append(a["Pid"])
    return pids


class KillScoringActor(threading.Thread):
    """Once the first part is committed, SIGKILL a live scoring actor, as a crashed worker would die."""

    def __init__(self, out: Path, timeout: float = 600.0):
        super().__init__(daemon=True)
        self.out, self.deadline, self.killed = out, time.monotonic() + timeout, None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            if any((self.out / "parts").glob("part-*.parquet")):
                for pid in _scoring_actor_pids():
                    os.kill(pid, signal.SIGKILL)
                    self.killed = pid
                    return
            time.sleep(0.05)


def test_killed_ray_worker_and_resume_keep_every_row_once(model, demo_night_csv, tmp_path, caplog):
    rows = pd.read_csv(demo_night_csv, dtype=str, keep_default_na=False)
    night_csv = write_csv(pd.concat([rows.head(400), rows.iloc[[5, 10]], rows.tail(1)]),  # 2 repeats, no id
                          tmp_path / "tonight.csv")
    out = tmp_path / "night"
    # 7 chunks of 64 rows go to Ray in windows of 3: parts commit window by window
    caplog.set_level(logging.INFO, logger="catalog_classifier.nightly.batch.engines.ray")
    cfg = ray_config(chunk_size=64).with_overrides(ray={"window_chunks": 3})
    killer = KillScoringActor(out)
    killer.start()
    try:
        res = run_nightly(night_csv, out, model, cfg, progress=False)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed is not None  # a scoring worker really died during the run
    assert sum("ray window" in r.getMessage() for r in caplog.records) == 3
    pred = read_predictions(out)
    n = len(pd.read_csv(night_csv, dtype=str))
    assert (pred["status"] == "rejected").sum() == 3
    assert pred["row"].tolist() == list(range(n)) and sum(res.counts.values()) == n
    local = run_nightly(night_csv, tmp_path / "local", model, night_config(64), progress=False)
    same = ["item_id", "row", "status", "reason", "category", "rule_id"]
    pd.testing.assert_frame_equal(read_predictions(tmp_path / "local")[same], pred[same])
    assert local.counts == res.counts

    # the driver stops between parts: the re-run computes only the missing parts, same rows
    parts = sorted((out / "parts").glob("part-*.parquet"))
    for p in parts[1::3]:
        p.unlink()
    (out / "predictions.parquet").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    again = run_nightly(night_csv, out, model, ray_config(chunk_size=64), progress=False)
    assert again.parts_computed == len(parts[1::3]) and again.parts_reused == len(parts) - len(parts[1::3])
    pd.testing.assert_frame_equal(read_predictions(out), pred)


def test_cli_joins_a_running_cluster(trained_model_dir, tmp_path):
    """`nightly --engine ray --address auto` joins a cluster started with `ray start` (and leaves it up)."""
    import subprocess
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from catalog_classifier.cli import app

    ray_bin = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray_bin, "start", "--head", "--num-cpus", "2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True)
    try:
        raw = pd.read_csv(DEMO_CSV, dtype=str, keep_default_na=False).iloc[200:330]
        csv = write_csv(raw, tmp_path / "tonight.csv")
        cfg = tmp_path / "night.json"
        cfg.write_text(json.dumps(night_config(64).to_dict()))
        out = tmp_path / "night"
        res = CliRunner().invoke(app, ["nightly", "--catalog", str(csv), "--model", str(trained_model_dir),
                                       "--out", str(out), "--config", str(cfg), "--engine", "ray",
                                       "--address", "auto", "--no-progress"])
        assert res.exit_code == 0, res.output + repr(res.exception)
        assert json.loads((out / "report.json").read_text())["engine"] == "ray"
        assert read_predictions(out)["item_id"].tolist() == raw["uniq_id"].tolist()
        alive = subprocess.run([ray_bin, "status"], capture_output=True, text=True)
        assert alive.returncode == 0  # the run did not shut down a cluster it only joined
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True)
