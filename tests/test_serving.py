"""The served model is the nightly model (issue 11, item 8).

One model, logged and registered in a temporary sqlite MLflow store, is scored three ways on
the same raw Flipkart rows: by the nightly job, by ``mlflow models serve`` over HTTP, and by
``mlflow.pyfunc.load_model`` in a process where the product's source tree is not importable.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import DEMO_CSV, DEMO_IMAGES, ROOT

MODEL_NAME = "catalog-classifier"
COMPARED = ("item_id", "row", "status", "reason", "category", "image_issue")


@pytest.fixture(scope="module")
def served(trained_model_dir, heldout_items, tmp_path_factory):
    """(tracking config, log info, raw request rows, the nightly job's rows for them)."""
    from catalog_classifier.catalog import read_table
    from catalog_classifier.config import CacheConfig, TrackingConfig
    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.nightly.batch.job import run_nightly
    from catalog_classifier.pyfunc import catalog_example
    from catalog_classifier.tracking import load_model, log_model_version

    tmp = tmp_path_factory.mktemp("serving")
    tc = TrackingConfig(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_location=str(tmp / "mlruns"))
    clf = CatalogClassifier.load(trained_model_dir)
    info = log_model_version(clf, trained_model_dir, {"oof_accuracy": 0.9}, {"test": "serving"}, tc,
                             input_example=catalog_example(DEMO_CSV))

    raw = read_table(DEMO_CSV)
    held = raw[raw["uniq_id"].isin(set(heldout_items["item_id"]))].head(10)
    dup = held.iloc[[0]]                     # the same listing twice: the second is rejected
    no_id = held.iloc[[1]].assign(uniq_id="")  # a real row whose id was lost: rejected
    rows = pd.concat([held, dup, no_id], ignore_index=True)
    catalog = tmp / "catalog.csv"
    rows.to_csv(catalog, index=False)

    loaded = load_model(f"models:/{MODEL_NAME}/{info['version']}", tc, CacheConfig(models_dir=str(tmp / "cache")))
    cfg = loaded.clf.config.with_overrides(tracking={"enabled": False},
                                           catalog={"image_root": str(DEMO_IMAGES)})
    night = run_nightly(catalog, tmp / "night", loaded, cfg, progress=False, date="2026-12-01")
    expected = pd.read_parquet(night.predictions)
    assert len(expected) == len(rows) and (expected["status"] == "rejected").sum() == 2
    return tc, info, rows, expected, tmp


def _request(rows: pd.DataFrame, **params) -> bytes:
    data = [[None if v is None else v for v in r] for r in rows.itertuples(index=False)]
    return json.dumps({"dataframe_split": {"columns": list(rows.columns), "data": data},
                       "params": params}).encode()


def _no_nan(text: str):
    """Strict JSON: NaN / Infinity are not JSON and must not appear."""
    def refuse(token):
        raise AssertionError(f"response holds {token}, which is not JSON")
    return json.loads(text, parse_constant=refuse)


def _same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(got) == len(expected)
    for col in COMPARED:
        a = [None if pd.isna(v) else v for v in got[col]]
        b = [None if pd.isna(v) else v for v in expected[col]]
        assert a == b, col
    kept = expected["status"] != "rejected"
    diff = (got.loc[kept, "confidence"].astype(float) - expected.loc[kept, "confidence"]).abs()
    assert diff.max() < 1e-6
    assert got.loc[~kept, "confidence"].isna().all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: bytes) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_logged_model_carries_code_signature_params_and_a_raw_example(served):
    import mlflow
    import yaml

    tc, info, _, _, tmp = served
    mlflow.set_tracking_uri(tc.tracking_uri)
    d = Path(mlflow.artifacts.download_artifacts(info["model_uri"], dst_path=str(tmp / "dl")))
    meta = yaml.safe_load((d / "MLmodel").read_text())
    params = json.loads(meta["signature"]["params"])
    assert [(p["name"], p["type"], p["default"]) for p in params] == [("image_root", "string", None)]
    assert meta["signature"]["inputs"] is None  # the product's own reading rules are the contract
    assert (d / "code" / "catalog_classifier" / "nightly" / "batch" / "chunks.py").is_file()
    assert (d / "code" / "stacking" / "stack.py").is_file()
    example = json.loads((d / meta["saved_input_example_info"]["serving_input_path"]).read_text())
    assert {"uniq_id", "product_name", "product_category_tree", "image"} <= set(example["dataframe_split"]["columns"])
    assert len(example["dataframe_split"]["data"]) == 2 and "image_root" in example["params"]
    reqs = (d / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in reqs) and any(r.startswith("lightgbm==") for r in reqs)
    assert not any(r.startswith("catalog-classifier") for r in reqs)  # the code travels in code/


def test_mlflow_models_serve_answers_like_the_nightly_job(served):
    tc, info, rows, expected, tmp = served
    port = _free_port()
    log = open(tmp / "serve.log", "wb")
    # `mlflow models serve` starts `uvicorn` from PATH: the one next to this interpreter
    env = {**os.environ, "MLFLOW_TRACKING_URI": tc.tracking_uri,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL_NAME}/{info['version']}",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, "server not up in 300 s: " + (tmp / "serve.log").read_text()[-3000:]
            time.sleep(1)

        status, text = _post(f"{base}/invocations", _request(rows, image_root=str(DEMO_IMAGES)))
        assert status == 200, text
        got = pd.DataFrame(_no_nan(text)["predictions"])
        _same_rows(got, expected)

        # the image_root param reaches predict: an empty folder leaves every kept row without its image
        empty = tmp / "no-images"
        empty.mkdir()
        status, text = _post(f"{base}/invocations", _request(rows, image_root=str(empty)))
        assert status == 200, text
        blind = pd.DataFrame(_no_nan(text)["predictions"])
        kept = expected["status"] != "rejected"
        assert expected.loc[kept, "image_issue"].isna().any()  # the night used images ...
        assert blind.loc[kept, "image_issue"].notna().all()    # ... this request could not
        assert list(blind["status"][~kept]) == ["rejected", "rejected"]

        # a request in no known shape is one clear error naming the columns, not a traceback
        status, text = _post(f"{base}/invocations", _request(rows[["pid", "brand"]]))
        assert status == 400 and "missing required column" in text, text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_pyfunc_takes_canonical_columns_too(served, demo_catalog):
    import mlflow

    tc, info, rows, expected, _ = served
    mlflow.set_tracking_uri(tc.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{info['version']}")
    by_id = demo_catalog.items.set_index("item_id")
    ids = [i for i in rows["uniq_id"].head(10)]
    canonical = by_id.loc[ids].reset_index().drop(columns=["row"])
    got = model.predict(canonical, params={"image_root": str(DEMO_IMAGES)})
    _same_rows(got, expected.head(10))
    assert got["model_name"].eq(MODEL_NAME).all() and got["model_run_id"].eq(info["run_id"]).all()


ISOLATED = textwrap.dedent("""
    import json, sys
    # the shared venv has the product installed in editable mode: hide it, and any path holding it
    hidden = ("catalog_classifier", "stacking")
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in str(getattr(f, "__module__", ""))]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in str(getattr(h, "__module__", ""))]
    import os
    sys.path[:] = [p for p in sys.path if not any(os.path.isdir(os.path.join(p or ".", h)) for h in hidden)]
    sys.path_importer_cache.clear()
    try:
        import catalog_classifier
    except ModuleNotFoundError:
        pass
    else:
        sys.exit("catalog_classifier is importable before the load: " + catalog_classifier.__file__)
    import mlflow.pyfunc, pandas as pd
    req = json.load(open(sys.argv[1]))
    model = mlflow.pyfunc.load_model(req["uri"])
    out = model.predict(pd.DataFrame(req["data"], columns=req["columns"]), params={"image_root": req["root"]})
    import catalog_classifier
    print(json.dumps({"code": catalog_classifier.__file__, "rows": out.to_dict("records")}))
""")


def test_logged_model_loads_where_the_product_is_not_importable(served):
    tc, info, rows, expected, tmp = served
    work = tmp / "elsewhere"
    work.mkdir()
    (work / "isolated.py").write_text(ISOLATED)
    one = rows.head(1)
    (work / "req.json").write_text(json.dumps({
        "uri": f"models:/{MODEL_NAME}/{info['version']}", "root": str(DEMO_IMAGES),
        "columns": list(one.columns), "data": one.values.tolist()}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = tc.tracking_uri
    res = subprocess.run([sys.executable, "isolated.py", "req.json"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    code = Path(out["code"]).resolve()
    assert not code.is_relative_to(ROOT)
    model_dir = code.parent.parent.parent  # MODEL/code/catalog_classifier/__init__.py: the logged copy
    assert code.parent.parent.name == "code" and (model_dir / "MLmodel").is_file()
    _same_rows(pd.DataFrame(out["rows"]), expected.head(1))
