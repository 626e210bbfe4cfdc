"""The review export in a real Label Studio (pinned in labelstudio_helpers.LABEL_STUDIO_VERSION).

Installed from PyPI into its own cached virtual environment and started on 127.0.0.1: a project
from the exported labelstudio_config.xml, a local-files storage over the image folder, a real
night's tasks (40 demo rows, some with missing or refused images), every image served, the
predictions shown, a few tasks annotated through the API, the export fed to ``labels import``.
A failed install fails the test: there is no skip. A second project holds a level-2 model's
queue with items accepted at a parent (tests/partial_helpers.py): their per-task choices
(dynamic ``value="$choices"``) are what the server offers, and a label comes back as a refinement.
"""
from __future__ import annotations

import json
from pathlib import Path

import requests

from catalog_classifier.config import ReviewExportConfig
from catalog_classifier.nightly.review.exports import BLANK_IMAGE, LOCAL_FILES_URL, export_review_queue
from catalog_classifier.nightly.review.labels import import_labels, labeled_items
from catalog_classifier.nightly.review.queue import build_review_queue

from conftest import DEMO_IMAGES
from labelstudio_helpers import auth, ensure_label_studio, label_studio_server
from partial_helpers import mark_partial

BAD_IMAGES = ["/etc/passwd", "../../etc/passwd", "file:///etc/shadow", "no-such-photo.jpg"]
TIMEOUT = 60


def night_tasks(trained_model_dir, heldout_items, out: Path):
    from catalog_classifier.classifier import CatalogClassifier

    clf = CatalogClassifier.load(trained_model_dir)
    items = heldout_items.head(40).copy()
    for k, bad in enumerate(BAD_IMAGES):
        items.loc[items.index[3 + 7 * k], "image"] = bad
    pred = clf.predict(items, image_root=str(DEMO_IMAGES))
    queue = build_review_queue(pred, items, audit_rate=1.0, seed=0)  # every row: reviews + full audit
    assert len(queue) == len(items)
    res = export_review_queue(queue, out, str(DEMO_IMAGES), categories=clf.labels_, model_version="demo/v3",
                              settings=ReviewExportConfig(document_root=str(DEMO_IMAGES.parent)))
    return clf, items, res


def partial_tasks(depth2_model_dir, heldout_items, out: Path):
    from catalog_classifier.classifier import CatalogClassifier

    clf = CatalogClassifier.load(depth2_model_dir)
    items = heldout_items.head(60)
    proba, _, _ = clf.predict_proba(items, image_root=str(DEMO_IMAGES))
    pred = mark_partial(clf.predict(items, image_root=str(DEMO_IMAGES)), proba, clf.labels_, min_parent=0.7)
    queue = build_review_queue(pred, items, audit_rate=0.0, seed=0, labels=clf.labels_)
    res = export_review_queue(queue, out, str(DEMO_IMAGES), categories=clf.labels_, model_version="demo/v4",
                              settings=ReviewExportConfig(document_root=str(DEMO_IMAGES.parent)))
    return clf, json.loads(Path(res.paths["labelstudio"]).read_text()), res


def test_label_studio_round_trip(trained_model_dir, depth2_model_dir, heldout_items, demo_catalog, tmp_path):
    python = ensure_label_studio()  # raises (test fails) when the install is impossible
    clf, items, res = night_tasks(trained_model_dir, heldout_items, tmp_path / "review")
    tasks = json.loads(Path(res.paths["labelstudio"]).read_text())
    bad_ids = set(items.loc[items["image"].isin(BAD_IMAGES), "item_id"])
    assert len(bad_ids) == len(BAD_IMAGES) and res.text_tasks >= len(BAD_IMAGES)
    for t in tasks:
        if t["data"]["item_id"] in bad_ids:
            assert t["data"]["image"] == BLANK_IMAGE and t["data"]["has_image"] is False
    with label_studio_server(python, tmp_path / "ls-data", DEMO_IMAGES.parent) as (base, token):
        s = requests.Session()
        s.headers.update(auth(token))
        r = s.post(f"{base}/api/projects", json={"title": "catalog review", "label_config":
                                                 Path(res.paths["labelstudio_config"]).read_text()}, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        r = s.post(f"{base}/api/storages/localfiles", json={"project": pid, "path": str(DEMO_IMAGES), "title": "images",
                                                             "use_blob_urls": False, "regex_filter": ""}, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        r = s.post(f"{base}/api/projects/{pid}/import", json=tasks, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        assert r.json()["task_count"] == len(tasks) and r.json()["prediction_count"] == len(tasks)

        got = s.get(f"{base}/api/tasks", params={"project": pid, "page_size": 1000, "fields": "all"},
                    timeout=TIMEOUT).json()["tasks"]
        assert [t["data"]["item_id"] for t in sorted(got, key=lambda t: t["id"])] == [t["data"]["item_id"] for t in tasks]
        image_tasks = [t for t in got if t["data"]["has_image"]]
        assert len(image_tasks) == res.image_tasks >= len(tasks) - len(BAD_IMAGES) - 2
        for t in image_tasks:  # every image is served by Label Studio itself
            url = t["data"]["image"]
            assert url.startswith(LOCAL_FILES_URL)
            img = s.get(base + url, timeout=TIMEOUT)
            assert img.status_code == 200 and img.headers["content-type"].startswith("image/"), url
        expected = {t["data"]["item_id"]: t["predictions"][0] for t in tasks}
        for t in got:
            preds = s.get(f"{base}/api/predictions", params={"task": t["id"]}, timeout=TIMEOUT).json()
            (p,) = preds
            want = expected[t["data"]["item_id"]]
            assert p["model_version"] == "demo/v3" and abs(p["score"] - want["score"]) < 1e-6
            assert p["result"][0]["value"]["choices"] == want["result"][0]["value"]["choices"]

        truth = dict(zip(demo_catalog.items["item_id"], demo_catalog.items["category"].str.split(" > ").str[0]))
        by_id = {t["data"]["item_id"]: t for t in got}
        chosen = [by_id[i] for i in sorted(bad_ids)[:2]] + image_tasks[:3]  # text and image tasks
        for t in chosen:
            r = s.post(f"{base}/api/tasks/{t['id']}/annotations", timeout=TIMEOUT, json={
                "was_cancelled": False, "result": [{"from_name": "category", "to_name": "text", "type": "choices",
                                                    "value": {"choices": [truth[t["data"]["item_id"]]]}}]})
            assert r.status_code == 201, r.text
        r = s.get(f"{base}/api/projects/{pid}/export", params={"exportType": "JSON", "download_all_tasks": "true"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:500]
        export = tmp_path / "labelstudio-export.json"
        export.write_bytes(r.content)

        # level 2, items accepted at a parent: the server keeps each task's own choices
        clf2, tasks2, res2 = partial_tasks(depth2_model_dir, heldout_items, tmp_path / "review2")
        r = s.post(f"{base}/api/projects", json={"title": "catalog refine", "label_config":
                                                 Path(res2.paths["labelstudio_config"]).read_text()}, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        pid2 = r.json()["id"]
        r = s.post(f"{base}/api/projects/{pid2}/import", json=tasks2, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        assert r.json()["task_count"] == len(tasks2) and r.json()["prediction_count"] == len(tasks2)
        got2 = s.get(f"{base}/api/tasks", params={"project": pid2, "page_size": 1000, "fields": "all"},
                     timeout=TIMEOUT).json()["tasks"]
        partial = [t for t in got2 if t["data"].get("known_ancestor")]
        assert len(partial) >= 2
        for t in partial:
            offered = [c["value"] for c in t["data"]["choices"]]
            anc = t["data"]["known_ancestor"]
            assert len(offered) >= 2 and all(c == anc or c.startswith(anc + " > ") for c in offered)
            assert t["data"]["known_ancestor"] in t["data"]["hint"]
            (p,) = s.get(f"{base}/api/predictions", params={"task": t["id"]}, timeout=TIMEOUT).json()
            assert p["result"][0]["value"]["choices"][0] in offered
        t = partial[0]
        refined = [c["value"] for c in t["data"]["choices"]][-1]
        r = s.post(f"{base}/api/tasks/{t['id']}/annotations", timeout=TIMEOUT, json={
            "was_cancelled": False, "result": [{"from_name": "category", "to_name": "text", "type": "choices",
                                                "value": {"choices": [refined]}}]})
        assert r.status_code == 201, r.text
        r = s.get(f"{base}/api/projects/{pid2}/export", params={"exportType": "JSON"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:500]
        export2 = tmp_path / "labelstudio-export-2.json"
        export2.write_bytes(r.content)

    store = tmp_path / "labels.parquet"
    rep = import_labels(export, store, clf.labels_)
    assert rep.format == "labelstudio" and rep.added == len(chosen) and rep.unlabeled == len(tasks) - len(chosen)
    got_items, labels = labeled_items(store, demo_catalog.items)
    assert dict(zip(got_items["item_id"], labels)) == {t["data"]["item_id"]: truth[t["data"]["item_id"]] for t in chosen}
    rep2 = import_labels(export2, tmp_path / "labels2.parquet", clf2.labels_)
    assert rep2.added == 1 and rep2.refined == 1 and not rep2.outside_ancestor
    got_items, labels = labeled_items(tmp_path / "labels2.parquet", demo_catalog.items)
    assert dict(zip(got_items["item_id"], labels)) == {t["data"]["item_id"]: refined}
