"""The listing's attribute list (``specs``): read from the shapes shops crawl it in, cleaned
like any text, and its attribute names read by the text models; a model saved before they
were read keeps reading without them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from catalog_classifier.catalog.cleaning import clean_specs
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.features.text import SPEC_PREFIX, item_text, spec_keys, spec_values

from conftest import DEMO_CSV


@pytest.fixture(scope="module")
def raw():
    return pd.read_csv(DEMO_CSV, dtype=str, keep_default_na=False)


def test_flipkart_specs_become_key_value_lines(demo_catalog, raw):
    specs = demo_catalog.items.set_index("item_id")["specs"]
    first = specs[raw.loc[0, "uniq_id"]].split("\n")
    assert first[:3] == ["Brand: Elegance", "Designed For: Door", "Type: Eyelet"]
    filled = specs[specs != ""]
    assert len(filled) >= 0.99 * len(specs)  # all but a handful of rows carry a list
    lines = [ln for s in filled for ln in s.split("\n")]
    assert all(": " in ln and "=>" not in ln for ln in lines)


def test_every_crawled_shape_gives_the_same_names(raw):
    dump = raw.loc[0, "product_specifications"]  # Flipkart's {"key"=>..., "value"=>...} dump
    pairs = [ln.split(": ", 1) for ln in clean_specs(dump).split("\n")]
    as_json_object = json.dumps({k: v for k, v in pairs})
    as_json_list = json.dumps([{"key": k, "value": v} for k, v in pairs])
    as_lines = "\n".join(f"{k}: {v}" for k, v in pairs)
    names = spec_keys(clean_specs(dump))
    assert names.split()[:3] == [SPEC_PREFIX + "brand", SPEC_PREFIX + "designed_for", SPEC_PREFIX + "type"]
    for other in (as_json_object, as_json_list, as_lines):
        assert spec_keys(clean_specs(other)) == names
    # a dump cut short keeps the pairs before the cut; keys lose the colon that would split them
    cut = spec_keys(clean_specs(dump[: len(dump) // 2]))
    assert cut and names.startswith(cut)
    assert clean_specs('{"Size: EU": "42", "Fit": null}') == "Size  EU: 42\nFit:"


@pytest.mark.parametrize("value", [
    '=HYPERLINK("http://evil.example/x","click")', "[" * 50_000 + "]" * 50_000, "\ud83d{\"a\x00b\": 1}",
    '{"key"=>"Ty\\"pe", "value"=>"An', "nil", None, float("nan"), "{}", "[1, 2, {\"value\": 3}]",
])
def test_hostile_specs_never_raise_and_come_out_clean(value):
    s = clean_specs(value, 4000)
    assert isinstance(s, str) and len(s) <= 4000 and "\x00" not in s
    s.encode("utf-8")  # no lone surrogate left
    spec_keys(s)
    item_text("t", "d", 400, s, 60).encode("utf-8")


def test_names_survive_the_text_cap(raw):
    row = raw.loc[raw["description"].str.len().idxmax()]  # 3,490 characters
    specs = clean_specs(row["product_specifications"])
    names = spec_keys(specs)
    assert 0 < len(names) <= 3000 // 4
    text = item_text(row["product_name"], row["description"], 3000, specs)
    assert len(text) == 3000 and text.endswith(" | " + names)  # the description is cut, not the names
    assert item_text(row["product_name"], row["description"], 3000).startswith(text[:2000])
    # a cap too small for them all keeps whole names only, at most a quarter of the text
    short = item_text(row["product_name"], row["description"], 400, specs).split(" | ")[-1]
    assert 0 < len(short) <= 100 and all(n in names.split() for n in short.split())


def test_short_values_come_after_the_title_and_long_ones_are_left_out(raw):
    boiler = raw[raw["description"].str.startswith("Buy ")]  # a third of the file: "Buy X at Rs. N..."
    row = boiler.iloc[0]
    specs = clean_specs(row["product_specifications"])
    pairs = [ln.split(": ", 1) for ln in specs.split("\n")]
    values = spec_values(specs, 60)
    kept = [f"{k.lower()} {v.lower()}" for k, v in pairs if 0 < len(v) <= 60]
    assert values.split(" ; ") == kept and 0 < len(kept)
    text = item_text(row["product_name"], row["description"], 4000, specs, 60)
    title, vals, desc, names = text.split(" | ")
    assert title == row["product_name"].lower().strip() and vals == values
    assert desc.startswith("buy ") and names == spec_keys(specs)
    long_ones = [ln for s in raw["product_specifications"] for ln in clean_specs(s).split("\n")
                 if len(ln.partition(": ")[2]) > 60]
    assert long_ones  # the real file has long values (care texts, feature lists) ...
    k, _, v = long_ones[0].partition(": ")
    assert v.lower()[:60] not in spec_values(long_ones[0], 60)  # ... and they are left out
    assert spec_values(long_ones[0], len(v)) == f"{k.lower()} {v.lower()}".strip()
    # no values asked for: the text of before
    assert item_text(row["product_name"], row["description"], 4000, specs, 0) == \
        item_text(row["product_name"], row["description"], 4000, specs)


def test_values_take_a_quarter_of_a_short_text_in_whole_pairs(raw):
    lengths = raw["product_specifications"].map(lambda s: len(spec_values(clean_specs(s), 60)))
    row = raw.loc[lengths.idxmax()]
    specs = clean_specs(row["product_specifications"])
    full = spec_values(specs, 60)
    text = item_text(row["product_name"], row["description"], 400, specs, 60)
    assert len(text) == 400
    vals = text.split(" | ")[1]
    assert 0 < len(vals) <= 100 and full.startswith(vals) and full[len(vals):].startswith(" ; ")
    assert text.endswith(" | " + text.split(" | ")[-1]) and text.split(" | ")[-1].startswith(SPEC_PREFIX)


def test_models_read_names_and_values_and_old_models_do_not(trained_model_dir, heldout_items, demo_catalog, tmp_path):
    items = heldout_items.head(60).reset_index(drop=True)
    new = CatalogClassifier.load(trained_model_dir)
    assert new.config.catalog.spec_keys and new.config.catalog.spec_values == 60
    X, _ = new.inputs(items, demo_catalog.image_root)
    assert all(SPEC_PREFIX in t for t, s in zip(X.texts, items["specs"]) if s)
    with_values = [(t, spec_values(s, 60)) for t, s in zip(X.texts, items["specs"]) if spec_values(s, 60)]
    assert len(with_values) > 40 and all(t.split(" | ")[1] == v for t, v in with_values)
    p, _, _ = new.predict_proba(items, demo_catalog.image_root)
    p_blank, _, _ = new.predict_proba(items.assign(specs=""), demo_catalog.image_root)
    assert not np.allclose(p, p_blank)  # the names are read

    # a model saved before catalog.spec_keys existed: its config has no such key
    old_dir = tmp_path / "old"
    shutil.copytree(trained_model_dir, old_dir)
    cfg = json.loads((old_dir / "config.json").read_text())
    del cfg["catalog"]["spec_keys"], cfg["catalog"]["spec_values"]
    (old_dir / "config.json").write_text(json.dumps(cfg))
    old = CatalogClassifier.load(old_dir)
    assert old.config.catalog.spec_keys is False and old.config.catalog.spec_values == 0
    X_old, _ = old.inputs(items, demo_catalog.image_root)
    assert not any(SPEC_PREFIX in t for t in X_old.texts)
    assert list(X_old.texts) == list(old.inputs(items.assign(specs=""), demo_catalog.image_root)[0].texts)
    p_old, _, _ = old.predict_proba(items, demo_catalog.image_root)
    np.testing.assert_allclose(p_old, old.predict_proba(items.assign(specs=""), demo_catalog.image_root)[0])
