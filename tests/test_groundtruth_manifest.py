"""Ground Truth input manifests checked line by line against the documented rules.

SageMaker Ground Truth "Input manifest files": UTF-8, one complete JSON object a line (no raw
line break inside), a line no larger than 100,000 characters and no attribute larger than 20,000,
attribute names not starting with ``$``, each object with ``source-ref`` (an S3 object) or
``source`` (the text); one task type a job, so image and text tasks go to separate manifests.
The label attribute name: letters, digits and single hyphens, at most 127 characters, not
ending in ``-ref`` or ``-metadata``.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from catalog_classifier.config import ReviewExportConfig
from catalog_classifier.nightly.review.exports import PREDICTION_ATTRIBUTE, export_review_queue
from catalog_classifier.nightly.review.queue import build_review_queue

from conftest import DEMO_IMAGES

PREFIX = "s3://catalog-bucket/flipkart/images"
LABEL_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,126}$")


@pytest.fixture(scope="module")
def queue_and_clf(trained_model_dir, heldout_items):
    from catalog_classifier.classifier import CatalogClassifier

    clf = CatalogClassifier.load(trained_model_dir)
    items = heldout_items.head(40).copy().reset_index(drop=True)
    items.loc[2, "image"] = None
    items.loc[5, "image"] = "../../etc/passwd"
    items.loc[9, "image"] = "missing.jpg"
    items.loc[11, "image"] = None
    items.loc[11, "title"] = "Towel " * 6000  # 36,000 characters: beyond one attribute's limit
    items.loc[12, "title"] = "Bath towel \u00e9\u00e8 \u2603 \U0001f6c1"  # non-ASCII text stays UTF-8
    pred = clf.predict(items, image_root=str(DEMO_IMAGES))
    return build_review_queue(pred, items, audit_rate=1.0, seed=0), clf


def check_line(raw: bytes, kind: str) -> dict:
    text = raw.decode("utf-8")  # strict: the file is UTF-8
    assert text.endswith("\n") and "\n" not in text[:-1] and "\r" not in text
    line = json.loads(text)
    assert isinstance(line, dict) and len(text.rstrip("\n")) <= 100_000
    for key, value in line.items():
        assert not key.startswith("$")
        assert len(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)) <= 20_000, key
    assert ("source-ref" in line) != ("source" in line)
    meta = line[f"{PREDICTION_ATTRIBUTE}-metadata"]
    if kind == "image":
        assert re.fullmatch(r"s3://[^/]+/.+", line["source-ref"])
        assert meta["type"] == "groundtruth/image-classification"
    else:
        assert isinstance(line["source"], str) and line["source"].strip()
        assert meta["type"] == "groundtruth/text-classification"
    return line


def test_manifests_follow_the_input_manifest_rules(queue_and_clf, tmp_path, caplog):
    q, clf = queue_and_clf
    with caplog.at_level(logging.WARNING):
        res = export_review_queue(q, tmp_path, str(DEMO_IMAGES), categories=clf.labels_,
                                  settings=ReviewExportConfig(s3_prefix=PREFIX))
    assert not res.warnings and not [r for r in caplog.records if "s3://" in r.getMessage()]
    assert LABEL_NAME.match(PREDICTION_ATTRIBUTE)
    assert not PREDICTION_ATTRIBUTE.endswith(("-ref", "-metadata"))
    lines = {}
    for kind in ("image", "text"):
        raw_lines = Path(res.paths[f"groundtruth_{kind}"]).read_bytes().splitlines(keepends=True)
        for raw in raw_lines:
            line = check_line(raw, kind)
            lines[line["item_id"]] = (kind, line)
    assert len(lines) == len(q) and res.image_tasks + res.text_tasks == len(q)
    by_item = dict(zip(q["item_id"], q["image"]))
    for item_id, (kind, line) in lines.items():
        if kind == "image":  # the prefix joined with the path under the image root, a real file
            rel = line["source-ref"][len(PREFIX) + 1:]
            assert (DEMO_IMAGES / rel).is_file() and rel == by_item[item_id]
    text_ids = {i for i, (k, _) in lines.items() if k == "text"}
    assert {"missing.jpg", "../../etc/passwd"} <= {by_item[i] for i in text_ids}
    long_title = next(line for k, line in lines.values() if k == "text" and line.get("title", "").startswith("Towel Towel"))
    assert len(long_title["source"]) == 20_000
    cats = json.loads(Path(res.paths["groundtruth_categories"]).read_text(encoding="utf-8"))
    assert cats == {"document-version": "2018-11-28", "labels": [{"label": c} for c in clf.labels_]}


def test_local_image_references_are_warned_about(queue_and_clf, tmp_path, caplog):
    q, clf = queue_and_clf
    with caplog.at_level(logging.WARNING):
        res = export_review_queue(q, tmp_path, str(DEMO_IMAGES), categories=clf.labels_)
    (w,) = [w for w in res.warnings if "Ground Truth" in w]
    assert f"{res.image_tasks} image reference(s)" in w and "s3_prefix" in w
    assert any(w in r.getMessage() for r in caplog.records)
    for raw in Path(res.paths["groundtruth_image"]).read_text().splitlines():
        assert not json.loads(raw)["source-ref"].startswith("s3://")


def test_the_nights_report_carries_the_warning(trained_model_dir, heldout_items, tmp_path):
    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.nightly.batch.job import run_nightly

    from nightly_helpers import night_config, raw_rows, write_csv

    rows = raw_rows(heldout_items["item_id"].head(30))
    refused = {rows.loc[3, "uniq_id"]: "/etc/passwd", rows.loc[4, "uniq_id"]: "../../etc/passwd"}
    rows.loc[3, "image"], rows.loc[4, "image"] = "/etc/passwd", "../../etc/passwd"
    catalog = write_csv(rows, tmp_path / "night.csv")
    out = tmp_path / "night"
    cfg = night_config(64).with_overrides(nightly={"audit_rate": 1.0})  # every row in the queue
    run_nightly(catalog, out, CatalogClassifier.load(trained_model_dir), cfg, progress=False)
    report = json.loads((out / "report.json").read_text())
    q = report["review_queue"]
    assert any("Ground Truth" in w and "s3_prefix" in w for w in q["warnings"])
    assert "warning: Ground Truth" in (out / "report.md").read_text()
    manifests = "".join((out / q["files"][k]).read_text() for k in ("groundtruth_image", "groundtruth_text"))
    assert "passwd" not in manifests and "passwd" not in (out / q["files"]["labelstudio"]).read_text()
    text_ids = {json.loads(x)["item_id"] for x in (out / q["files"]["groundtruth_text"]).read_text().splitlines()}
    assert set(refused) <= text_ids and q["items"] == len(rows)
