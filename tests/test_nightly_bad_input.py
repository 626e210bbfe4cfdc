"""Bad input in a nightly catalog (issue 3, item 6): real demo rows with one field broken each.

Every row is accounted for exactly once; only unidentifiable rows are rejected; image
problems leave a prediction from text with the reason in ``image_issue``; missing columns
and wrong file types stop the run before anything is written.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from catalog_classifier.catalog import CatalogError, read_catalog
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.nightly.batch.commit import PREDICTIONS, committed_parts
from catalog_classifier.nightly.batch.manifest import read_manifest, write_manifest
from catalog_classifier.nightly.batch.job import run_nightly

from conftest import DEMO_IMAGES
from nightly_helpers import night_config, raw_rows, read_predictions, write_csv

CHUNK = 8
ESCAPE = "image path escapes image root"


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose header claims width x height (CRC fixed so PIL trusts it)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _corrupt_png(jpg) -> bytes:
    """A real photo as PNG with part of its compressed pixel data flipped."""
    buf = io.BytesIO()
    Image.open(jpg).convert("RGB").save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT") + 204
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    return bytes(data)


@pytest.fixture(scope="module")
def bad_catalog(heldout_items, tmp_path_factory):
    """(csv path, image root, {row: expected}) with expected = status/reason/image_issue."""
    tmp = tmp_path_factory.mktemp("bad")
    root, outside = tmp / "images", tmp / "outside"
    root.mkdir()
    outside.mkdir()
    rows = raw_rows(heldout_items["item_id"])
    rows = rows[rows["image"].map(lambda f: (DEMO_IMAGES / f).is_file())].head(30).reset_index(drop=True)
    for f in rows["image"]:
        shutil.copy(DEMO_IMAGES / f, root / f)
    real = DEMO_IMAGES / rows.loc[0, "image"]
    jpeg = real.read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "corrupt.png").write_bytes(_corrupt_png(real))
    (root / "zero.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not a picture\n" * 50)
    (root / "bomb.png").write_bytes(_bomb_png(50_000, 50_000))
    shutil.copy(real, outside / "secret.jpg")
    os.symlink(outside / "secret.jpg", root / "link_out.jpg")
    os.symlink(root / rows.loc[27, "image"], root / "link_in.jpg")

    ok = {"status": "predicted", "image_issue": None}
    expected = {i: dict(ok) for i in range(len(rows))}
    images = {0: ("missing.jpg", "image not found"), 1: ("truncated.jpg", "corrupt or truncated image"),
              2: ("corrupt.png", "corrupt or truncated image"), 3: ("zero.jpg", "empty image file"),
              4: ("notes.jpg", "not an image"), 5: ("bomb.png", "decompression bomb"),
              6: ("../outside/secret.jpg", ESCAPE), 7: (str(outside / "secret.jpg"), ESCAPE),
              8: ("link_out.jpg", ESCAPE), 27: ("link_in.jpg", None)}
    for i, (ref, why) in images.items():
        rows.loc[i, "image"] = ref
        expected[i]["image_issue"] = why
    rows.loc[9, ["product_name", "description"]] = ["", ""]
    rows.loc[10, ["product_name", "description"]] = ["   \t ", " \n "]
    rows.loc[11, "description"] = ((rows.loc[11, "description"] + " ") * 2000)[:1_048_576]
    rows.loc[12, "product_name"] = "\x00\x07" + rows.loc[12, "product_name"] + "\x1b[31m\u202e\r"
    rows.loc[13, "product_name"] = rows.loc[13, "product_name"] + " 🎧🔥✨ (╯°□°)╯︵ ┻━┻"
    rows.loc[14, "product_name"] = rows.loc[14, "product_name"] + " Наушники ヘッドホン हेडफ़ोन سماعات"
    for i, price in zip(range(15, 20), ["nan", "-499", "0", "call for price", "1e15"]):
        rows.loc[i, ["discounted_price", "retail_price"]] = [price, price]
    rows.loc[20, "uniq_id"] = rows.loc[0, "uniq_id"]  # duplicate of a row in an earlier chunk
    rows.loc[22, "uniq_id"] = rows.loc[21, "uniq_id"]  # duplicate within the same chunk
    rows.loc[23, "uniq_id"] = ""
    rows.loc[24, "uniq_id"] = "   "
    rows.loc[25, "brand"] = "Zyxqv Unheard-Of Brand"
    rows.loc[26, "product_url"] = "http://some-unknown-shop.example/p/itm1?pid=X"
    expected[20] = {"status": "rejected", "reason": "duplicate item_id (first kept at row 0)"}
    expected[22] = {"status": "rejected", "reason": "duplicate item_id (first kept at row 21)"}
    expected[23] = expected[24] = {"status": "rejected", "reason": "missing item_id"}
    return write_csv(rows, tmp / "bad.csv"), root, expected


def test_every_bad_row_is_accounted_for(bad_catalog, trained_model_dir, tmp_path):
    csv, root, expected = bad_catalog
    clf = CatalogClassifier.load(trained_model_dir)
    cfg = night_config(CHUNK, catalog={"image_root": str(root)})
    out = tmp_path / "night"
    res = run_nightly(csv, out, clf, cfg, progress=False)
    pred = read_predictions(out)
    assert pred["row"].tolist() == list(range(len(expected)))
    for i, exp in expected.items():
        r = pred.loc[i]
        if exp["status"] == "rejected":
            assert (r["status"], r["reason"]) == ("rejected", exp["reason"]), i
            assert pd.isna(r["category"]) and np.isnan(r["confidence"]), i
            continue
        assert r["status"] in ("accepted", "review"), (i, r["status"], r["reason"])
        assert r["category"] in clf.labels_ and 0 < r["confidence"] <= 1, i
        issue = None if pd.isna(r["image_issue"]) else r["image_issue"]
        want = exp["image_issue"]
        assert issue == want or (want and issue and issue.startswith(want)), (i, issue, want)
    assert res.counts["rejected"] == 4 and sum(res.counts.values()) == len(expected)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["rejections"] == {"missing item_id": 2, "duplicate item_id": 2}

    # untouched rows get exactly what they get in a catalog without the bad ones
    clean = read_catalog(write_csv(raw_rows(pred.loc[28:29, "item_id"]), tmp_path / "clean.csv"), cfg.catalog)
    alone = clf.predict(clean.items, image_root=str(root))
    assert pred.loc[28:29, "category"].tolist() == alone["category"].tolist()
    np.testing.assert_allclose(pred.loc[28:29, "confidence"], alone["confidence"], rtol=1e-5)

    # a crash after the first chunk: the cross-chunk duplicate is still found on restart
    for i, part in committed_parts(out).items():
        if i > 0:
            part.unlink()
    (out / PREDICTIONS).unlink()
    write_manifest(out, {**read_manifest(out), "status": "running"})
    resumed = run_nightly(csv, out, clf, cfg, progress=False)
    assert resumed.parts_reused == 1 and resumed.parts_computed == len(committed_parts(out)) - 1
    pd.testing.assert_frame_equal(read_predictions(out), pred)


def test_missing_required_column_refuses_to_start(heldout_items, tmp_path):
    rows = raw_rows(heldout_items["item_id"].head(20))
    out = tmp_path / "night"
    csv = write_csv(rows.drop(columns=["product_name"]), tmp_path / "no_title.csv")
    with pytest.raises(CatalogError, match=r"title \(source column 'product_name'\)"):
        run_nightly(csv, out, None, night_config(), progress=False)
    generic = rows.rename(columns={"uniq_id": "item_id"})[["item_id", "description", "brand"]]
    csv = write_csv(generic, tmp_path / "generic.csv")
    with pytest.raises(CatalogError, match=r"missing required column\(s\) for adapter 'generic': title"):
        run_nightly(csv, out, None, night_config(catalog={"adapter": None}), progress=False)
    assert not out.exists()


def test_wrong_file_type_refuses_to_start(heldout_items, tmp_path):
    rows = raw_rows(heldout_items["item_id"].head(5))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:  # what an .xlsx is on disk
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", rows.to_csv(index=False))
    out = tmp_path / "night"
    cases = {"catalog.txt": rows.to_csv(index=False).encode(), "catalog.xlsx": buf.getvalue(),
             "xlsx_renamed.csv": buf.getvalue()}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(CatalogError, match=r"catalog\.txt.*unknown file type '\.txt'"):
        run_nightly(tmp_path / "catalog.txt", out, None, night_config(), progress=False)
    with pytest.raises(CatalogError, match=r"catalog\.xlsx.*unknown file type '\.xlsx'"):
        run_nightly(tmp_path / "catalog.xlsx", out, None, night_config(), progress=False)
    with pytest.raises(CatalogError, match=r"xlsx_renamed\.csv"):
        run_nightly(tmp_path / "xlsx_renamed.csv", out, None, night_config(), progress=False)
    with pytest.raises(CatalogError, match="not found"):
        run_nightly(tmp_path / "absent.csv", out, None, night_config(), progress=False)
    assert not out.exists()
