"""Review queue ordering and exports, and reviewer labels coming back into the labeled store.

Predictions are real: the session's trained demo model over the demo catalog, with a strict
precision target so the queue holds both model reviews and rule-forced reviews.
"""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catalog_classifier.nightly.review.exports import export_review_queue
from catalog_classifier.nightly.review.labels import (LabelImportError, import_labels, labeled_items, load_taxonomy,
                                               read_store)
from catalog_classifier.catalog.cleaning import title_key
from catalog_classifier.nightly.review.queue import build_review_queue

from conftest import DEMO_IMAGES

GT_META_KEYS = {"class-name", "confidence", "type", "job-name", "human-annotated", "creation-date"}


@pytest.fixture(scope="module")
def clf(trained_model_dir):
    from catalog_classifier.classifier import CatalogClassifier

    return CatalogClassifier.load(trained_model_dir)


@pytest.fixture(scope="module")
def predictions(clf, demo_catalog):
    clf.set_target_precision(0.995)
    return clf.predict(demo_catalog.items, image_root=demo_catalog.image_root)


def truth(items: pd.DataFrame) -> dict[str, str]:
    return dict(zip(items["item_id"], items["category"].str.split(" > ").str[0]))


def with_near_duplicates(pred: pd.DataFrame, items: pd.DataFrame, n: int = 6):
    """Crawls repeat a product across shops: copy some reviewed listings with another id and size."""
    model_review = (pred["status"] == "review") & ~pred["reason"].astype(str).str.startswith("rule ")
    src = pred[model_review].sort_values("item_id").head(n)
    new_pred, new_items = [], []
    for copy in (1, 2):
        p = src.copy()
        p["item_id"] = p["item_id"] + f"-shop{copy}"
        p["top1_proba"] = p["top1_proba"] - 0.001 * copy  # nearly as unsure as the original
        p["confidence"] = p["top1_proba"]
        it = items.set_index("item_id").loc[src["item_id"]].reset_index()
        it["item_id"] = it["item_id"] + f"-shop{copy}"
        it["title"] = it["title"] + f" - {copy * 250}"
        new_pred.append(p)
        new_items.append(it)
    return pd.concat([pred, *new_pred], ignore_index=True), pd.concat([items, *new_items], ignore_index=True)


def test_queue_order_duplicates_rules_and_audit_share(predictions, demo_catalog):
    pred, items = with_near_duplicates(predictions, demo_catalog.items)
    q = build_review_queue(pred, items, audit_rate=0.05, seed=3)
    review, accepted = pred[pred["status"] == "review"], pred[pred["status"] == "accepted"]

    # every review row once, plus round(rate * accepted) audit rows, ranked 1..n
    is_audit = q["queue_reason"] == "audit"
    assert sorted(q.loc[~is_audit, "item_id"]) == sorted(review["item_id"])
    assert is_audit.sum() == round(0.05 * len(accepted))
    assert set(q.loc[is_audit, "item_id"]) <= set(accepted["item_id"])
    assert q["priority"].tolist() == list(range(1, len(q) + 1))
    assert q["queue_reason"][~is_audit].str.startswith("review: ").all()

    # model reviews: highest expected value (p_wrong x items settled) first among first members of
    # their duplicate group
    model = q[~is_audit & ~q["queue_reason"].str.startswith("review: rule ")]
    first = model[~model["title"].map(title_key).duplicated()]
    assert (np.diff(first["expected_value"].to_numpy()) <= 1e-12).all()
    assert model["expected_value"].iloc[0] == pytest.approx(model["expected_value"].max())
    np.testing.assert_allclose(q["expected_value"], q["p_wrong"] * (q["duplicates"] + 1))
    # near-duplicates are spread: never adjacent, and a group's copies come after every group's first
    keys = q["title"].map(title_key).tolist()
    assert all(a != b for a, b in zip(keys, keys[1:]))
    copies = model["title"].map(title_key).duplicated().to_numpy()
    # 12 injected copies (6 titles x 2 shops), plus any near-duplicates the real catalog has
    injected = model["item_id"].str.contains("-shop").to_numpy()
    assert injected.sum() == 12 and copies.sum() >= 12
    assert (np.diff(copies.astype(int)) >= 0).all()

    # rule-forced reviews and audit rows are spread through the queue, not piled at one end
    rule_pos = np.flatnonzero(q["queue_reason"].str.startswith("review: rule ").to_numpy())
    audit_pos = np.flatnonzero(is_audit.to_numpy())
    for pos in (rule_pos, audit_pos):
        assert len(pos) >= 5
        gaps = np.diff(pos)
        expected = len(q) / len(pos)
        assert pos[0] <= expected + 1 and gaps.max() <= expected + 3 and gaps.min() >= 1

    # deterministic: same seed, any row order -> same queue; another seed -> another audit sample
    shuffled = build_review_queue(pred.sample(frac=1.0, random_state=1), items, 0.05, 3)
    pd.testing.assert_frame_equal(shuffled, q)
    other = build_review_queue(pred, items, 0.05, 4)
    assert set(other.loc[other["queue_reason"] == "audit", "item_id"]) != set(q.loc[is_audit, "item_id"])


def test_exports_follow_the_documented_formats(predictions, demo_catalog, clf, tmp_path):
    items = demo_catalog.items.copy()
    q = build_review_queue(predictions, items, audit_rate=0.03, seed=0, description_chars=120)
    q.loc[1, "image"] = None  # an item without an image goes to Ground Truth as text ("source")
    stamp = datetime(2026, 11, 24, 2, 30)
    paths = export_review_queue(q, tmp_path, str(DEMO_IMAGES), categories=clf.labels_, model_version="v7",
                                job_name="night-2026-11-24", created_at=stamp).paths
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    assert (q["description"].dropna().str.len() <= 120).all()

    with open(paths["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["item_id"] for r in rows] == q["item_id"].tolist()
    assert {"item_id", "title", "description", "brand", "image", "category", "confidence", "top1", "top2",
            "top3", "queue_reason", "priority"} <= set(rows[0])

    # Ground Truth manifests, one per task type: source-ref (image) or source (text), label + -metadata
    image_lines = [json.loads(ln) for ln in Path(paths["groundtruth_image"]).read_text().splitlines()]
    text_lines = [json.loads(ln) for ln in Path(paths["groundtruth_text"]).read_text().splitlines()]
    assert len(image_lines) + len(text_lines) == len(q)
    assert all("source-ref" in ln for ln in image_lines) and all("source" in ln for ln in text_lines)
    by_id = {ln["item_id"]: ln for ln in image_lines + text_lines}
    assert "source" in by_id[q.loc[1, "item_id"]]
    for (_, r) in q.iterrows():
        line = by_id[r["item_id"]]
        assert ("source-ref" in line) != ("source" in line)
        if "source-ref" in line:
            assert line["source-ref"] == str((DEMO_IMAGES / r["image"]).resolve())
        else:
            assert line["source"].startswith(r["title"])
        labels = [k for k in line if f"{k}-metadata" in line]
        assert len(labels) == 1
        attr = labels[0]
        assert not attr.endswith("-ref") and "-metadata" not in attr
        meta = line[f"{attr}-metadata"]
        assert set(meta) == GT_META_KEYS
        assert clf.labels_[line[attr]] == meta["class-name"] == r["category"]
        assert meta["human-annotated"] == "no" and meta["job-name"] == "night-2026-11-24"
        assert meta["type"] == ("groundtruth/image-classification" if "source-ref" in line
                                else "groundtruth/text-classification")
        assert meta["confidence"] == pytest.approx(r["confidence"], abs=1e-6)
        assert datetime.fromisoformat(meta["creation-date"]) == stamp
        assert line["item_id"] == r["item_id"]
    cats = json.loads(Path(paths["groundtruth_categories"]).read_text())
    assert cats["document-version"] == "2018-11-28" and [c["label"] for c in cats["labels"]] == clf.labels_

    # Label Studio: tasks with data + predictions; result names match the labeling config
    view = ET.parse(paths["labelstudio_config"]).getroot()
    objects = {el.get("name"): el.get("value") for el in view if el.tag in ("Image", "Text")}
    choices = view.find("Choices")
    assert choices.get("name") == "category" and choices.get("toName") in objects
    assert choices.get("value") == "$choices"  # each task's own options: the whole taxonomy here
    tasks = json.loads(Path(paths["labelstudio"]).read_text())
    assert len(tasks) == len(q)
    for task, (_, r) in zip(tasks, q.iterrows()):
        assert set(task) == {"data", "predictions"}
        for value in objects.values():  # every $variable of the config is in data
            assert value.lstrip("$") in task["data"]
        assert task["data"]["item_id"] == r["item_id"] and task["data"]["priority"] == r["priority"]
        assert [c["value"] for c in task["data"]["choices"]] == clf.labels_
        (pred,) = task["predictions"]
        assert pred["model_version"] == "v7"
        assert pred["score"] == pytest.approx(r["confidence"], abs=1e-6) and 0 <= pred["score"] <= 1
        (res,) = pred["result"]
        assert res["from_name"] == choices.get("name") and res["to_name"] == choices.get("toName")
        assert res["type"] == "choices" and res["value"]["choices"] == [r["category"]]


def test_groundtruth_output_manifest_loads_into_the_store(predictions, demo_catalog, clf, tmp_path):
    q = build_review_queue(predictions, demo_catalog.items, 0.02, 0)
    paths = export_review_queue(q, tmp_path / "night", str(DEMO_IMAGES), categories=clf.labels_).paths
    true = truth(demo_catalog.items)
    out_lines, expected = [], {}
    manifests = [paths["groundtruth_image"], paths["groundtruth_text"]]
    for i, raw in enumerate(ln for m in manifests for ln in Path(m).read_text().splitlines()):
        line = json.loads(raw)  # Ground Truth keeps every input key and adds the job's label attribute
        label = true[line["item_id"]]
        meta = {"class-name": label, "confidence": 0.91, "type": "groundtruth/image-classification",
                "job-name": "labeling-job/catalog-review", "human-annotated": "yes",
                "creation-date": "2026-11-24T09:15:02.113408"}
        if i == 0:
            meta["human-annotated"] = "no"  # auto-labeled by Ground Truth: not a human label
        elif i == 1:
            meta = {"failure-reason": "ClientError: task expired", "job-name": meta["job-name"],
                    "human-annotated": "yes", "type": meta["type"], "creation-date": meta["creation-date"]}
        else:
            expected[line["item_id"]] = label
        line["catalog-review"] = clf.labels_.index(label)
        line["catalog-review-metadata"] = meta
        out_lines.append(json.dumps(line))
    out = tmp_path / "output.manifest"
    out.write_text("\n".join(out_lines) + "\n")

    store = tmp_path / "labels" / "labels.parquet"
    rep = import_labels(out, store, clf.labels_)
    assert rep.format == "groundtruth" and rep.added == len(expected) and rep.unlabeled == 2
    assert not rep.conflicts and not rep.unknown
    df = read_store(store)
    assert set(df.columns) >= {"item_id", "label", "source", "time", "imported_at"}
    assert (df["source"] == "labeling-job/catalog-review").all()
    assert (df["time"] == pd.Timestamp("2026-11-24T09:15:02.113408", tz="UTC")).all()
    got_items, got_labels = labeled_items(store, demo_catalog.items)
    assert dict(zip(got_items["item_id"], got_labels)) == expected
    assert got_items["title"].notna().all()  # joined to the real catalog rows
    assert import_labels(out, store, clf.labels_).added == 0  # the same file again: all duplicates


def test_labelstudio_export_loads_latest_non_cancelled_annotation(predictions, demo_catalog, clf, tmp_path):
    q = build_review_queue(predictions, demo_catalog.items, 0.0, 0).head(12)
    paths = export_review_queue(q, tmp_path / "night", str(DEMO_IMAGES), categories=clf.labels_).paths
    true = truth(demo_catalog.items)
    wrong = {c: next(x for x in clf.labels_ if x != c) for c in clf.labels_}

    def ann(i, label, when, cancelled=False):
        return {"id": i, "completed_by": {"id": 3, "email": "rev@example.com"}, "was_cancelled": cancelled,
                "ground_truth": False, "created_at": when, "updated_at": when, "lead_time": 4.2, "task": 1,
                "result": [{"id": f"r{i}", "from_name": "category", "to_name": "text", "type": "choices",
                            "origin": "manual", "value": {"choices": [label]}}]}

    export = []
    for n, task in enumerate(json.loads(Path(paths["labelstudio"]).read_text())):
        item = task["data"]["item_id"]
        t = {"id": n + 1, "project": 5, "data": task["data"], "predictions": task["predictions"],
             "created_at": "2026-11-24T08:00:00Z", "updated_at": "2026-11-24T10:00:00Z"}
        if n == 0:
            t["annotations"] = []  # not reviewed yet
        elif n == 1:  # corrected later: the latest annotation wins
            t["annotations"] = [ann(1, wrong[true[item]], "2026-11-24T09:00:00Z"),
                                ann(2, true[item], "2026-11-24T09:30:00Z")]
        elif n == 2:  # a later cancelled (skipped) annotation is ignored
            t["annotations"] = [ann(3, true[item], "2026-11-24T09:00:00Z"),
                                ann(4, wrong[true[item]], "2026-11-24T09:45:00.5Z", cancelled=True)]
        else:
            t["annotations"] = [ann(10 + n, true[item], "2026-11-24T09:10:00.123456Z")]
        export.append(t)
    f = tmp_path / "project-5-at-2026-11-24.json"
    f.write_text(json.dumps(export))

    store = tmp_path / "labels.parquet"
    rep = import_labels(f, store, clf.labels_, source="labelstudio-night1")
    assert rep.format == "labelstudio" and rep.added == 11 and rep.unlabeled == 1 and not rep.conflicts
    items, labels = labeled_items(store, demo_catalog.items)
    assert len(items) == 11 and all(true[i] == lab for i, lab in zip(items["item_id"], labels))
    df = read_store(store)
    assert (df["source"] == "labelstudio-night1").all() and (df["annotator"] == "rev@example.com").all()


def test_conflicts_duplicates_skip_label_and_unknown_labels(demo_catalog, tmp_path):
    items = demo_catalog.items.head(6)
    ids, true = items["item_id"].tolist(), truth(items)
    taxonomy = sorted(set(truth(demo_catalog.items).values()))
    other = {c: next(x for x in taxonomy if x != c) for c in taxonomy}
    store = tmp_path / "labels.parquet"

    def write(name, rows):
        p = tmp_path / name
        pd.DataFrame(rows, columns=["item_id", "category", "time"]).to_csv(p, index=False)
        return p

    first = write("a.csv", [(i, true[i], "2026-11-20T10:00:00Z") for i in ids[:4]] + [(ids[4], "__skip__", "")])
    rep = import_labels(first, store, taxonomy)
    assert (rep.added, rep.not_for_training, rep.duplicates) == (4, 1, 0)
    assert import_labels(first, store, taxonomy).duplicates == 4  # same file twice: nothing new

    # a later different label for ids[0] wins; an earlier one for ids[1] loses; both reported
    second = write("b.csv", [(ids[0], other[true[ids[0]]], "2026-11-22T10:00:00Z"),
                             (ids[1], other[true[ids[1]]], "2026-11-19T10:00:00Z"),
                             (ids[2], true[ids[2]], "2026-11-23T10:00:00Z")])
    rep = import_labels(second, store, taxonomy)
    assert rep.duplicates == 1 and rep.added == 2
    conflicts = {c["item_id"]: c for c in rep.conflicts}
    assert set(conflicts) == {ids[0], ids[1]}
    assert conflicts[ids[0]]["kept"] == other[true[ids[0]]] and conflicts[ids[1]]["kept"] == true[ids[1]]
    assert "conflict" in rep.summary() and ids[0] in rep.summary()
    it, lab = labeled_items(store, demo_catalog.items)
    got = dict(zip(it["item_id"], lab))
    assert got[ids[0]] == other[true[ids[0]]] and got[ids[1]] == true[ids[1]] and ids[4] not in got

    # labels outside the taxonomy: the file is refused, naming them; the store is untouched
    before = read_store(store)
    bad = write("c.csv", [(ids[5], "Toys & Games", ""), (ids[3], "Garden", ""), (ids[4], true[ids[4]], "")])
    with pytest.raises(LabelImportError) as e:
        import_labels(bad, store, taxonomy)
    assert "'Toys & Games'" in str(e.value) and "'Garden'" in str(e.value)
    pd.testing.assert_frame_equal(read_store(store), before)
    rep = import_labels(bad, store, taxonomy, allow_unknown=True)
    assert rep.added == 1 and set(rep.unknown) == {"Toys & Games", "Garden"}


def test_labeled_items_since_keeps_only_labels_that_arrived_later(demo_catalog, tmp_path):
    items = demo_catalog.items.head(4)
    true = truth(items)
    store = tmp_path / "labels.parquet"
    p = tmp_path / "l.csv"
    pd.DataFrame({"item_id": list(true)[:2], "category": list(true.values())[:2]}).to_csv(p, index=False)
    import_labels(p, store, None, now=datetime(2026, 11, 20, 12, 0))
    pd.DataFrame({"item_id": list(true)[2:], "category": list(true.values())[2:]}).to_csv(p, index=False)
    import_labels(p, store, None, now=datetime(2026, 11, 22, 12, 0))
    it, _ = labeled_items(store, demo_catalog.items, since=pd.Timestamp("2026-11-21T00:00:00Z"))
    assert it["item_id"].tolist() == list(true)[2:]
    assert len(labeled_items(store, demo_catalog.items)[0]) == 4


def test_labels_import_cli(trained_model_dir, demo_catalog, tmp_path):
    from typer.testing import CliRunner

    from catalog_classifier.cli import app

    true = truth(demo_catalog.items.head(5))
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    pd.DataFrame({"item_id": list(true), "category": list(true.values())}).to_csv(good, index=False)
    pd.DataFrame({"item_id": list(true)[:1], "category": ["Furniture"]}).to_csv(bad, index=False)
    store = tmp_path / "store.parquet"
    runner = CliRunner()
    args = ["labels", "import", "--taxonomy", str(trained_model_dir), "--store", str(store)]
    res = runner.invoke(app, [*args, str(good), "--source", "csv-review"])
    assert res.exit_code == 0, res.output
    assert "5 added" in res.output
    assert load_taxonomy(trained_model_dir) == json.loads((trained_model_dir / "labels.json").read_text())
    res = runner.invoke(app, [*args, str(bad)])
    assert res.exit_code == 2 and "'Furniture'" in res.output and "not in the taxonomy" in res.output
    assert len(read_store(store)) == 5
