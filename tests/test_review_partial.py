"""Rows not accepted at full depth on the demo catalog: their reasons (LightGBM contributions by
feature group), the expected-value order of the queue, partial items (accepted at a parent) in
the night's accounting, the exports and labels coming back.

The level-2 model is real; rows are marked ``accepted_partial`` as the hierarchical router's
contract says (tests/partial_helpers.py) where the router does not do it itself.
"""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from catalog_classifier.ancestors import refine
from catalog_classifier.catalog.cleaning import title_key
from catalog_classifier.explain import BIAS, POOL, group_contributions
from catalog_classifier.nightly.review.exports import export_review_queue, parent_slug
from catalog_classifier.nightly.review.labels import import_labels
from catalog_classifier.nightly.review.queue import allowed_labels, build_review_queue
from stacking.lgbm import raw_scores
from stacking.meta_features import build_meta_matrix

from conftest import DEMO_IMAGES
from nightly_helpers import night_config, raw_rows, read_predictions, write_csv
from partial_helpers import mark_partial, partial_router

GROUPS = {"image", "text models", "brand", "price", "domain", "title tokens", "text length", POOL, BIAS}


@pytest.fixture(scope="module")
def clf2(depth2_model_dir):
    from catalog_classifier.classifier import CatalogClassifier

    return CatalogClassifier.load(depth2_model_dir)


@pytest.fixture(scope="module")
def night(clf2, demo_catalog):
    """All demo items: (items, proba, base, predictions with partial rows marked)."""
    items = demo_catalog.items
    proba, base, _ = clf2.predict_proba(items, image_root=demo_catalog.image_root)
    pred = clf2.predict(items, image_root=demo_catalog.image_root)
    return items, proba, base, mark_partial(pred, proba, clf2.labels_)


def test_reasons_sum_to_the_raw_score_of_the_class(clf2, night):
    items, proba, base, pred = night
    X, _ = clf2.inputs(items, DEMO_IMAGES)
    st = clf2.stack_
    F, names, _ = build_meta_matrix(base, clf2._passthrough(items, X), st.params.max_classes_full_probas)
    raw = raw_scores(st.booster_, F) + (st.pool_.scores(base) if st.pool_ is not None else 0.0)
    leaf = softmax(raw / st.temperature_, axis=1)  # the leaf stack's logits ...
    np.testing.assert_allclose(leaf, st.predict_proba(X, clf2._passthrough(items, X), base_proba=base), atol=1e-9)
    # ... refined by the depth-1 stack (the demo config's stack.ancestor_depths) into the model's scores
    (a1,) = clf2.ancestors_
    p1 = a1.stack.predict_proba(X, clf2._passthrough(items, X))
    np.testing.assert_allclose(refine(leaf, [a1], [p1]), proba, atol=1e-9)
    assert np.abs(leaf - proba).max() > 0.01  # the refinement is not a no-op here

    explained = pred["status"] != "accepted"
    assert explained.sum() >= 20 and (pred["status"] == "accepted_partial").sum() >= 5
    assert pred.loc[~explained, "why"].isna().all() and pred.loc[~explained, "why_json"].isna().all()
    index = {l: i for i, l in enumerate(clf2.labels_)}
    for i in np.flatnonzero(explained.to_numpy()):
        r = pred.iloc[i]
        why = json.loads(r["why_json"])
        c = index[r["model_category"]]
        assert why["class"] == r["model_category"] and set(why["groups"]) <= GROUPS
        assert sum(why["groups"].values()) == pytest.approx(raw[i, c], abs=1e-6)
        assert why["raw_score"] == pytest.approx(raw[i, c], abs=1e-6)
        assert set(why["base"]) == {m for m in base if not np.isnan(base[m][i]).any()}
        for m, g in why["base"].items():
            assert g["label"] == clf2.labels_[int(np.argmax(base[m][i]))]
        (parent,) = why["ancestors"]  # the depth-1 stack's guess for this row
        assert parent["depth"] == 1 and parent["label"] == a1.labels[int(np.argmax(p1[i]))]
        assert parent["proba"] == pytest.approx(p1[i].max(), abs=1e-4)
        left = r["why"].split(" || ")[0]
        assert " || " in r["why"] and left.count(":") == len(why["base"]) + 1
        assert left.endswith(f"depth 1 stack: {parent['label']} {parent['proba']:.2f}")

    # the grouping is separate from how contributions are computed: any additive attribution
    contrib = st.contributions(None, clf2._passthrough(items, X).take(np.arange(5)),
                               {k: v[:5] for k, v in base.items()}, np.zeros(5, dtype=int))
    groups, summed = group_contributions(contrib, names)
    assert groups[-2:] == [POOL, BIAS] and np.allclose(summed.sum(1), raw[:5, 0], atol=1e-6)


def test_per_class_contributions_equal_lightgbm_pred_contrib(clf2, night):
    """Each row walks only its class's trees (stacking.lgbm.class_boosters): the same SHAP values
    as LightGBM's multiclass pred_contrib block of that class, on every demo row and any class."""
    items, _, base, _ = night
    X, _ = clf2.inputs(items, DEMO_IMAGES)
    st = clf2.stack_
    pt = clf2._passthrough(items, X)
    F, _, _ = build_meta_matrix(base, pt, st.params.max_classes_full_probas)
    n, nf = F.shape
    full = np.asarray(st.booster_.predict(F.toarray(), pred_contrib=True)).reshape(n, st.n_classes_, nf + 1)
    classes = np.random.default_rng(0).integers(0, st.n_classes_, n)
    contrib = st.contributions(None, pt, base, classes)
    np.testing.assert_allclose(contrib[:, :-1], full[np.arange(n), classes], rtol=0, atol=1e-9)
    assert len(np.unique(classes)) == st.n_classes_ and st.n_classes_ >= 10


def test_expected_value_order(night):
    items, _, _, pred = night
    # two model rows without near-duplicates, reviews first (the model trained on these items
    # leaves few in review; the others are put there, as a less sure model would)
    model_rows = pred[pred["status"].isin(["review", "accepted"]) & pred["rule_id"].isna()]
    keys = items.set_index("item_id")["title"].map(title_key)
    lone = model_rows[model_rows["item_id"].map(keys).map(keys.value_counts()) == 1]
    lone = lone.sort_values("status", key=lambda s: s != "review", kind="stable")
    a, b = lone["item_id"].iloc[0], lone["item_id"].iloc[1]
    pred = pred.copy()
    pred.loc[pred["item_id"].isin([a, b]), ["status", "reason"]] = [
        "review", "confidence below the category's threshold"]
    pred.loc[pred["item_id"] == a, "leaf_confidence"] = 0.6  # p_wrong 0.4, three near-duplicates
    pred.loc[pred["item_id"] == b, "leaf_confidence"] = 0.5  # p_wrong 0.5, alone
    src_p, src_i = pred[pred["item_id"] == a], items[items["item_id"] == a]
    copies_p, copies_i = [], []
    for k in (1, 2, 3):  # a crawl repeats the product in other shops
        copies_p.append(src_p.assign(item_id=f"{a}-shop{k}", status="accepted"))
        copies_i.append(src_i.assign(item_id=f"{a}-shop{k}", title=src_i["title"] + f" - {k * 250}"))
    pred = pd.concat([pred, *copies_p], ignore_index=True)
    items = pd.concat([items, *copies_i], ignore_index=True)
    q = build_review_queue(pred, items, audit_rate=0.0, seed=0).set_index("item_id")
    assert q.loc[a, "duplicates"] == 3 and q.loc[b, "duplicates"] == 0
    assert q.loc[a, "expected_value"] == pytest.approx(1.6) and q.loc[b, "expected_value"] == pytest.approx(0.5)
    assert q.loc[a, "priority"] < q.loc[b, "priority"]
    # everywhere: model reviews first in their duplicate group come by expected value, highest first
    q = q.reset_index()
    model = q[q["rule_id"].isna()]
    first = model[~model["title"].map(title_key).duplicated()]
    assert (np.diff(first["expected_value"].to_numpy()) <= 1e-12).all()
    part = q[q["status"] == "accepted_partial"]
    p = pred.set_index("item_id").loc[part["item_id"]]
    np.testing.assert_allclose(part["p_wrong"], 1 - p["leaf_confidence"] / p["confidence"], atol=1e-12)


def test_partial_items_in_queue_and_exports(clf2, night, tmp_path):
    items, _, _, pred = night
    pred = pred.copy()
    hostile = pred.index[pred["status"] == "accepted_partial"][0]
    pred.loc[hostile, "why"] = '=HYPERLINK("http://x","y") | linear_text: A 0.5'
    q = build_review_queue(pred, items, audit_rate=0.05, seed=0, labels=clf2.labels_)
    queued = pred[pred["status"].isin(["review", "accepted_partial"])]
    assert sorted(q.loc[q["queue_reason"] != "audit", "item_id"]) == sorted(queued["item_id"])
    part = q[q["status"] == "accepted_partial"]
    assert len(part) >= 5 and part["queue_reason"].str.startswith("refine: accepted as ").all()
    for _, r in part.iterrows():
        assert r["known_ancestor"] == r["category"]
        choices = json.loads(r["choices"])
        assert choices == allowed_labels(clf2.labels_, r["category"]) and r["model_category"] in choices
        assert len(choices) >= 2 and all(c == r["category"] or c.startswith(r["category"] + " > ") for c in choices)
    assert q.loc[q["status"] != "accepted_partial", ["known_ancestor", "choices"]].isna().all().all()
    assert q.loc[q["status"] != "accepted", "why"].notna().all()

    res = export_review_queue(q, tmp_path, str(DEMO_IMAGES), categories=clf2.labels_, model_version="v2")
    with open(res.paths["csv"], newline="", encoding="utf-8") as f:
        rows = {r["item_id"]: r for r in csv.DictReader(f)}
    bad_id = pred.loc[hostile, "item_id"]
    assert rows[bad_id]["why"] == "'" + pred.loc[hostile, "why"]  # escaped by io_utils
    assert json.loads(rows[part["item_id"].iloc[0]]["choices"]) == json.loads(part["choices"].iloc[0])

    view = ET.parse(res.paths["labelstudio_config"]).getroot()
    (choices_el,) = view.findall("Choices")
    assert choices_el.get("value") == "$choices" and not choices_el.findall("Choice")
    variables = [el.get("value").lstrip("$") for el in view if el.tag in ("Image", "Text")]
    assert {"why", "hint", "text", "image"} <= set(variables)
    tasks = {t["data"]["item_id"]: t for t in json.loads(Path(res.paths["labelstudio"]).read_text())}
    for _, r in q.iterrows():
        t = tasks[r["item_id"]]
        assert all(isinstance(t["data"][v], str) and t["data"][v] for v in variables)
        offered = [c["value"] for c in t["data"]["choices"]]
        (guess,) = t["predictions"][0]["result"][0]["value"]["choices"]
        assert guess in offered
        if r["status"] == "accepted_partial":
            assert offered == json.loads(r["choices"]) and guess == r["model_category"]
            assert t["data"]["known_ancestor"] == r["known_ancestor"] and r["known_ancestor"] in t["data"]["hint"]
        else:
            assert offered == clf2.labels_ and "known_ancestor" not in t["data"]
        if r["status"] != "accepted":
            assert t["data"]["why"] == r["why"]
    assert tasks[bad_id]["data"]["why"] == pred.loc[hostile, "why"]  # JSON holds it as it is

    # Ground Truth: partial items only in their parent's manifests, class index into that parent's list
    main = [json.loads(ln) for k in ("groundtruth_image", "groundtruth_text")
            for ln in Path(res.paths[k]).read_text().splitlines()]
    assert {ln["item_id"] for ln in main} == set(q.loc[q["status"] != "accepted_partial", "item_id"])
    index = json.loads(Path(res.paths["groundtruth_parents"]).read_text())
    assert set(index) == set(part["known_ancestor"])
    seen = set()
    for parent, entry in index.items():
        cats = [c["label"] for c in json.loads((tmp_path / entry["categories"]).read_text())["labels"]]
        assert cats == allowed_labels(clf2.labels_, parent) and entry["categories"].startswith(
            f"review_queue.partial-{parent_slug(parent)}")
        lines = [json.loads(ln) for k in ("image", "text") if k in entry
                 for ln in (tmp_path / entry[k]).read_text().splitlines()]
        assert len(lines) == entry["items"] and lines
        for ln in lines:
            r = part.set_index("item_id").loc[ln["item_id"]]
            assert ln["known_ancestor"] == parent and ln["why"] == r["why"][:2000]
            assert cats[ln["predicted-category"]] == ln["predicted-category-metadata"]["class-name"] == r["model_category"]
            seen.add(ln["item_id"])
    assert seen == set(part["item_id"])

    # labels coming back: a label under the known ancestor refines the item; one outside is kept, flagged
    p1, p2 = part.iloc[0], part.iloc[1]
    outside = next(l for l in clf2.labels_ if not l.startswith(p2["known_ancestor"]))
    export = []
    for item, label in ((p1["item_id"], json.loads(p1["choices"])[-1]), (p2["item_id"], outside)):
        export.append({"id": len(export) + 1, "project": 1, "data": tasks[item]["data"], "annotations": [{
            "id": len(export) + 1, "completed_by": 1, "was_cancelled": False, "created_at": "2026-12-01T09:00:00Z",
            "result": [{"from_name": "category", "to_name": "text", "type": "choices",
                        "value": {"choices": [label]}}]}]})
    f = tmp_path / "ls-export.json"
    f.write_text(json.dumps(export))
    rep = import_labels(f, tmp_path / "labels.parquet", clf2.labels_)
    assert rep.added == 2 and rep.refined == 1
    assert rep.outside_ancestor == [{"item_id": p2["item_id"], "label": outside, "known_ancestor": p2["known_ancestor"]}]
    assert "outside the known ancestor" in rep.summary() and p2["item_id"] in rep.summary()


def test_night_counts_partial_items_once(depth2_model_dir, demo_catalog, tmp_path):
    from catalog_classifier.classifier import CatalogClassifier
    from catalog_classifier.nightly.batch.job import run_nightly

    clf = partial_router(CatalogClassifier.load(depth2_model_dir), min_parent=0.7)
    items = demo_catalog.items
    heldout = items.drop(items.sample(frac=0.8, random_state=0).index)
    raw = raw_rows(heldout["item_id"].head(80))
    csv_path = write_csv(raw, tmp_path / "catalog.csv")
    out = tmp_path / "night" / "2026-12-01"
    res = run_nightly(csv_path, out, clf, night_config(chunk_size=32), progress=False, date="2026-12-01")
    pred = read_predictions(out)
    assert len(pred) == len(raw) and pred["row"].tolist() == list(range(len(raw)))
    by_status = pred["status"].value_counts().to_dict()
    assert by_status.get("accepted_partial", 0) >= 3
    assert res.counts == {s: by_status.get(s, 0) for s in ("accepted", "accepted_partial", "review", "rejected")}
    assert sum(res.counts.values()) == len(raw)
    partial = pred[pred["status"] == "accepted_partial"]
    assert (partial["accepted_depth"] == 1).all() and partial["why"].notna().all()
    assert (partial["leaf_confidence"] < partial["confidence"] + 1e-12).all()
    assert pred.loc[pred["status"] == "review", "why"].notna().all()
    assert pred.loc[pred["status"] == "accepted", "why"].isna().all()

    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert s["counts"] == res.counts and s["partial_rate"] == pytest.approx(len(partial) / len(raw))
    assert sum(v["total"] for v in s["by_category"].values()) == len(raw)
    assert sum(v["accepted_partial"] for v in s["by_category"].values()) == len(partial)
    assert s["mean_confidence"] == pytest.approx(pred["leaf_confidence"].mean())
    assert "accepted at a parent category" in (out / "report.md").read_text()
    q = report["review_queue"]
    assert q["partial"] == len(partial) and q["review"] == res.counts["review"]
    with open(out / q["files"]["csv"], newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "accepted_partial"]
    assert sorted(r["item_id"] for r in rows) == sorted(partial["item_id"])
    assert all(r["known_ancestor"] == r["category"] and json.loads(r["choices"]) for r in rows)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"] == res.counts and "groundtruth_parents" in m["outputs"]["review"]
