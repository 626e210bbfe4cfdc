"""Operator mistakes through the real command line: one line on stderr, exit code 2, no traceback;
a damaged committed part is recomputed on resume; a night's MLflow run survives a kill -9 while logging."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.nightly.batch.commit import checksum_path, committed_parts
from catalog_classifier.nightly.batch.manifest import file_sha256
from catalog_classifier.nightly.batch.job import run_nightly

from conftest import ROOT
from nightly_helpers import night_config, raw_rows, read_predictions, write_csv

ENV = {**os.environ, "CATALOG_CLASSIFIER_THREADS": "1", "PYTHONPATH": str(ROOT)}


def cli(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalog_classifier", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def assert_operator_error(res: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr + res.stdout and lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def night_csv(heldout_items, tmp_path_factory) -> Path:
    return write_csv(raw_rows(heldout_items["item_id"][:60]), tmp_path_factory.mktemp("night") / "tonight.csv")


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "run.json"
    p.write_text(night_config(32).dumps())
    return p


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot create entries in (root ignores permission bits: /proc/1)."""
    if os.geteuid() == 0:
        return Path("/proc/1")
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o500)
    return d


@pytest.mark.parametrize("case", ["out_is_file", "out_under_file", "out_unwritable", "chunk_zero", "chunk_negative",
                                  "chunk_zero_in_config", "image_root_missing", "model_dir_missing",
                                  "config_missing", "catalog_missing"])
def test_nightly_operator_errors(case, night_csv, run_cfg, trained_model_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = tmp_path / "night"
    args = {"--catalog": night_csv, "--out": out, "--model": trained_model_dir, "--config": run_cfg}
    extra: list[str] = []
    expect: tuple[str, ...]
    if case == "out_is_file":
        args["--out"], expect = afile, ("--out", "is a file")
    elif case == "out_under_file":
        args["--out"], expect = afile / "night", ("--out", "which is a file")
    elif case == "out_unwritable":
        args["--out"], expect = _unwritable(tmp_path) / "night", ("--out", "not writable")
    elif case in ("chunk_zero", "chunk_negative"):
        n = "0" if case == "chunk_zero" else "-1"
        extra, expect = ["--chunk-size", n], ("--chunk-size must be at least 1", f"got {n}")
    elif case == "chunk_zero_in_config":
        cfg = tmp_path / "zero.json"
        cfg.write_text(night_config(0).dumps())
        args["--config"], expect = cfg, ("nightly.chunk_size must be at least 1",)
    elif case == "image_root_missing":
        extra, expect = ["--image-root", tmp_path / "no-images"], ("--image-root", "no-images", "not an existing")
    elif case == "model_dir_missing":
        args["--model"], expect = tmp_path / "no-model", ("model not found", "no-model")
    elif case == "config_missing":
        args["--config"], expect = tmp_path / "no.yaml", ("config file not found",)
    else:
        args["--catalog"], expect = tmp_path / "no.csv", ("--catalog", "no.csv", "does not exist")
    flat = [x for kv in args.items() for x in kv]
    assert_operator_error(cli("nightly", *flat, *extra, "--no-progress"), *expect)
    assert not out.exists() and afile.read_text() == "not a folder"  # nothing was written


def test_missing_registered_model_is_one_line(night_csv, tmp_path):
    cfg = night_config(32, tracking={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                     "artifact_location": str(tmp_path / "mlruns")})
    (tmp_path / "run.json").write_text(cfg.dumps())
    res = cli("nightly", "--catalog", night_csv, "--out", tmp_path / "night", "--config", tmp_path / "run.json",
              "--model", "models:/no-such-model@champion", "--no-progress")
    assert_operator_error(res, "models:/no-such-model@champion")
    assert not (tmp_path / "night").exists()


def test_train_and_predict_operator_errors(night_csv, trained_model_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_operator_error(cli("train", "--catalog", night_csv, "--out", afile, "--no-register"), "--out", "is a file")
    assert_operator_error(cli("train", "--catalog", tmp_path / "no.csv", "--out", tmp_path / "m"), "--catalog")
    assert_operator_error(cli("train", "--catalog", night_csv, "--image-root", tmp_path / "none",
                              "--out", tmp_path / "m"), "--image-root")
    assert_operator_error(cli("predict", "--catalog", night_csv, "--model", tmp_path / "no-model",
                              "--out", tmp_path / "p.parquet"), "model not found")
    assert_operator_error(cli("predict", "--catalog", night_csv, "--model", trained_model_dir,
                              "--out", afile / "p.parquet"), "--out", "which is a file")
    assert not (tmp_path / "m").exists() and not (tmp_path / "p.parquet").exists()
    for name, text, fragment in (("risk.yaml", "stack:\n  risk_batch: -3\n", "stack.risk_batch"),
                                 ("delta.yaml", "stack:\n  risk_delta: 2\n", "stack.risk_delta"),
                                 ("idle.yaml", "cache:\n  max_idle_days: -1\n", "cache.max_idle_days"),
                                 ("broken.yaml", "stack: [unclosed\n", "broken.yaml")):
        bad = tmp_path / name
        bad.write_text(text)
        assert_operator_error(cli("train", "--catalog", night_csv, "--config", bad, "--out", tmp_path / "m",
                                  "--no-register"), "config", fragment)
        assert_operator_error(cli("nightly", "--catalog", night_csv, "--config", bad, "--model", trained_model_dir,
                                  "--out", tmp_path / "night"), "config", fragment)
    assert not (tmp_path / "m").exists() and not (tmp_path / "night").exists()


@pytest.fixture(scope="module")
def model(trained_model_dir):
    return CatalogClassifier.load(trained_model_dir)


def _as_killed(night: Path) -> None:
    """What a run killed after its last part leaves: no merged output, manifest still running."""
    (night / "predictions.parquet").unlink()
    m = json.loads((night / "manifest.json").read_text())
    (night / "manifest.json").write_text(json.dumps({**m, "status": "running"}))


def test_damaged_parts_are_recomputed_and_reported(model, night_csv, tmp_path):
    cfg = night_config(16)  # 60 rows: 4 parts
    ref = run_nightly(night_csv, tmp_path / "ref", model, cfg, progress=False)
    night = tmp_path / "night"
    run_nightly(night_csv, night, model, cfg, progress=False)
    parts = committed_parts(night)
    sums = json.loads((night / "manifest.json").read_text())["parts_sha256"]
    assert sums == {p.name: file_sha256(p) for p in parts.values()}  # the manifest keeps every part's sha256

    _as_killed(night)
    truncated, unchecked = parts[1], parts[3]
    truncated.write_bytes(truncated.read_bytes()[:100])
    checksum_path(unchecked).unlink()
    res = run_nightly(night_csv, night, model, cfg, progress=False)
    got = [(p["part"], p["reason"].split(" (")[0]) for p in res.parts_recomputed]
    assert got == [(truncated.name, "checksum mismatch"), (unchecked.name, "no checksum recorded")]
    assert res.parts_reused == 2 and res.parts_computed == 2
    report = json.loads((night / "report.json").read_text())
    assert report["parts_recomputed"] == res.parts_recomputed
    pd.testing.assert_frame_equal(read_predictions(night), read_predictions(ref.out_dir))
    for p in committed_parts(night).values():  # the recomputed parts carry their checksum again
        assert checksum_path(p).read_text().strip() == file_sha256(p)


KILL_WHILE_LOGGING = textwrap.dedent("""
    # test-side fault injection: the process dies at its first MLflow artifact upload
    import os, signal, sys
    import mlflow
    mlflow.log_artifact = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    from catalog_classifier.cli import main
    sys.argv = ["catalog-classifier", *sys.argv[1:]]
    main()
""")


def test_mlflow_run_resumed_after_kill_while_logging(night_csv, trained_model_dir, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = night_config(32, tracking={"tracking_uri": uri, "artifact_location": str(tmp_path / "mlruns")})
    (tmp_path / "run.json").write_text(cfg.dumps())
    night = tmp_path / "night"
    args = ["nightly", "--catalog", str(night_csv), "--out", str(night), "--model", str(trained_model_dir),
            "--config", str(tmp_path / "run.json"), "--no-progress"]
    wrapper = tmp_path / "kill_while_logging.py"
    wrapper.write_text(KILL_WHILE_LOGGING)
    killed = subprocess.run([sys.executable, str(wrapper), *args], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    manifest = json.loads((night / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["mlflow_run_id"]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.nightly.mlflow_experiment)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id == manifest["mlflow_run_id"] and run.info.status == "RUNNING"

    done = cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [manifest["mlflow_run_id"]] == [summary["mlflow_run_id"]]
    (run,) = runs
    assert run.info.status == "FINISHED" and run.data.tags["night_run_id"] == summary["run_id"]
    assert run.data.metrics["rows"] == len(pd.read_csv(night_csv))
    assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} == {"report/report.json",
                                                                                   "report/report.md"}
    final = json.loads((night / "manifest.json").read_text())
    assert final["status"] == "complete" and final["mlflow_logged"] is True


def test_model_identity_follows_the_model_files(tmp_path):
    """Model files' hashes are memoised by path, size and mtime: the same files give the same
    identity, a file rewritten in place (same size, new bytes) a new one."""
    import os
    from types import SimpleNamespace

    from catalog_classifier.nightly.batch.manifest import model_identity

    model = tmp_path / "model"
    (model / "stack").mkdir(parents=True)
    (model / "stack" / "meta_lgbm.txt").write_text("tree\nversion=v4\n")
    (model / "labels.json").write_text('["a", "b"]')
    clf = SimpleNamespace(model_dir_=model)
    first = model_identity(clf)["fingerprint"]
    assert model_identity(clf)["fingerprint"] == first
    f = model / "labels.json"
    st = f.stat()
    f.write_text('["a", "c"]')
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert model_identity(clf)["fingerprint"] != first
