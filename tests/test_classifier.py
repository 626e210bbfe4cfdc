"""The facade on the real demo catalog: routing, rules, save/load, degenerate items."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.rules import RuleSet

from conftest import DEMO_IMAGES, ROOT


def test_heldout_accuracy_and_routing(trained_model_dir, heldout_items):
    clf = CatalogClassifier.load(trained_model_dir)
    pred = clf.predict(heldout_items, image_root=str(DEMO_IMAGES))
    assert len(pred) == len(heldout_items)
    truth = heldout_items["category"].str.split(" > ").str[0].to_numpy()
    acc = (pred["model_category"].to_numpy() == truth).mean()
    assert acc > 0.85, acc
    accepted = pred["status"] == "accepted"
    assert 0.5 < accepted.mean() < 1.0
    # accepted items are right at least as often as items sent to review, and nearly always (this
    # model is right on every held-out item since it reads the attribute values, so the two can tie)
    ok = pred["category"].to_numpy() == truth
    assert ok[accepted].mean() >= max(ok[~accepted].mean(), 0.95)
    # the model's reviews are exactly the rows under their category's threshold
    model = pred["rule_id"].isna()
    assert ((pred["leaf_confidence"] < pred["threshold"]) == ~accepted)[model].all()
    assert pred.loc[~accepted, "reason"].notna().all()
    assert (pred["top1_proba"] >= pred["top2_proba"]).all() and (pred["top2_proba"] >= pred["top3_proba"]).all()


def test_rule_overrides_the_model(trained_model_dir, heldout_items):
    clf = CatalogClassifier.load(trained_model_dir)
    base = clf.predict(heldout_items, image_root=str(DEMO_IMAGES))
    # pick a real item and a category the model did not give it
    i = 0
    title_word = heldout_items.loc[i, "title"].split()[0]
    other = next(l for l in clf.labels_ if l != base.loc[i, "category"])
    clf.rules = RuleSet.from_dict({"format": 1, "rules": [
        {"id": "force-it", "description": "test", "priority": 10,
         "when": {"title": {"any_keywords": [title_word]}}, "action": {"category": other}},
        {"id": "review-watches", "description": "test", "priority": 5,
         "when": {"title": {"any_keywords": ["watch"]}}, "action": {"review": "check watches"}},
    ]})
    pred = clf.predict(heldout_items, image_root=str(DEMO_IMAGES))
    assert pred.loc[i, "category"] == other and pred.loc[i, "status"] == "accepted"
    assert pred.loc[i, "rule_id"] == "force-it"
    assert pred.loc[i, "model_category"] == base.loc[i, "category"]  # the model's answer is kept
    watches = heldout_items["title"].str.contains(r"\bwatch\b", case=False) & ~heldout_items["title"].str.contains(title_word, regex=False)
    assert watches.any()
    assert (pred.loc[watches, "status"] == "review").all()
    assert pred.loc[watches, "reason"].str.contains("check watches").all()


def test_degenerate_items_still_get_a_prediction(trained_model_dir, heldout_items):
    clf = CatalogClassifier.load(trained_model_dir)
    items = heldout_items.head(6).copy()
    items.loc[0, "image"] = "does-not-exist.jpg"
    items.loc[1, "image"] = None
    items.loc[2, ["title", "description"]] = ["", ""]
    items.loc[3, "price"] = np.nan
    items.loc[4, "brand"] = "a brand never seen before"
    items.loc[5, ["title", "description", "brand", "image"]] = ["", "", None, None]
    items.loc[5, "price"] = np.nan
    pred = clf.predict(items, image_root=str(DEMO_IMAGES))
    assert len(pred) == 6
    assert pred["category"].isin(clf.labels_).all()
    assert np.isfinite(pred["confidence"]).all()
    assert pred.loc[0, "image_issue"] == "image not found"
    assert pred.loc[1, "image_issue"] == "no image"
    # an item with a missing image still gets its category from text
    full = clf.predict(heldout_items.head(1), image_root=str(DEMO_IMAGES))
    assert pred.loc[0, "model_category"] == full.loc[0, "model_category"]


def test_prediction_does_not_depend_on_the_other_items_in_the_batch(trained_model_dir, heldout_items):
    """An item without an image scores the same alone, among other image-less items, or in a
    mixed batch (nightly chunks and Ray batches group items arbitrarily)."""
    clf = CatalogClassifier.load(trained_model_dir)
    items = heldout_items.head(12).reset_index(drop=True)
    items.loc[:3, "image"] = None
    mixed = clf.predict(items, image_root=str(DEMO_IMAGES))
    alone = clf.predict(items.head(4), image_root=str(DEMO_IMAGES))
    np.testing.assert_allclose(alone["confidence"], mixed["confidence"].head(4), atol=1e-9)
    assert alone["category"].tolist() == mixed["category"].head(4).tolist()
    assert (alone["image_issue"] == "no image").all()


def test_save_load_in_new_process_gives_identical_predictions(trained_model_dir, heldout_items, tmp_path):
    clf = CatalogClassifier.load(trained_model_dir)
    here = clf.predict(heldout_items, image_root=str(DEMO_IMAGES))
    items_path = tmp_path / "items.parquet"
    heldout_items.to_parquet(items_path)
    out = tmp_path / "pred.parquet"
    code = (
        "import sys, pandas as pd\n"
        "from catalog_classifier.classifier import CatalogClassifier\n"
        f"clf = CatalogClassifier.load({str(trained_model_dir)!r})\n"
        f"clf.predict(pd.read_parquet({str(items_path)!r}), image_root={str(DEMO_IMAGES)!r})"
        f".to_parquet({str(out)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    there = pd.read_parquet(out)
    assert (there["category"].to_numpy() == here["category"].to_numpy()).all()
    assert (there["status"].to_numpy() == here["status"].to_numpy()).all()
    np.testing.assert_allclose(there["confidence"].to_numpy(), here["confidence"].to_numpy(), rtol=0, atol=1e-9)


def test_model_directory_carries_everything(trained_model_dir):
    names = {p.name for p in trained_model_dir.iterdir()}
    assert {"stack", "tokenizer.model", "labels.json", "thresholds.json", "rules.json", "config.json",
            "versions.json", "tabular.json", "backbone.pth"} <= names
    versions = json.loads((trained_model_dir / "versions.json").read_text())
    assert versions["torch"] and versions["lightgbm"] and versions["sentencepiece"]
    thr = json.loads((trained_model_dir / "thresholds.json").read_text())
    assert set(thr["thresholds"]) == set(json.loads((trained_model_dir / "labels.json").read_text()))


def test_rows_a_rule_routes_do_not_choose_thresholds(trained_model_dir, demo_catalog):
    """Towel and wall-sticker listings always go to review by rule, so the model never decides
    them: the saved model chose its thresholds without those training rows."""
    clf = CatalogClassifier.load(trained_model_dir)
    train = demo_catalog.items.sample(frac=0.8, random_state=0).sort_index().reset_index(drop=True)
    rows = clf.stack_.threshold_rows_
    assert len(rows) == len(train)
    titles = train["title"].str.lower()
    towel = titles.str.contains(r"\btowels?\b").to_numpy()
    assert towel.sum() >= 10 and not rows[towel].any()
    assert rows.mean() > 0.9  # everything else still counts
