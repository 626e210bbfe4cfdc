"""Catalog input layer, on the real demo catalogs (data/flipkart1050, shared BigBasket)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq_lib
import pytest

from catalog_classifier.catalog import (
    CatalogError, category_at_depth, fold_rare, iter_table_chunks, make_labels, read_catalog,
    read_table, validate_items,
)
from catalog_classifier.catalog.adapters import adapt, parse_flipkart_tree
from catalog_classifier.catalog.schema import CATEGORY_SEP, ITEM_COLUMNS, REJECT_COLUMNS
from catalog_classifier.config import CatalogConfig, load_config

from conftest import SHARED, require_dataset

REPO = Path(__file__).resolve().parents[1]
FLIPKART_DIR = REPO / "data" / "flipkart1050"
FLIPKART_CSV = FLIPKART_DIR / "flipkart_com-ecommerce_sample_1050.csv"
BIGBASKET_CSV = SHARED / "bigbasket" / "BigBasket Products.csv"
FLIPKART = CatalogConfig(adapter="flipkart")


@pytest.fixture(scope="module")
def fk_raw() -> pd.DataFrame:
    return read_table(FLIPKART_CSV)


@pytest.fixture(scope="module")
def fk_catalog():
    return read_catalog(FLIPKART_CSV, load_config(FLIPKART_DIR / "catalog.yaml").catalog)


def _sample(fk_raw: pd.DataFrame, n: int) -> pd.DataFrame:
    """n real rows spread over the file (so all top-level categories and empty brands occur)."""
    return fk_raw.iloc[:: len(fk_raw) // n][:n].reset_index(drop=True)


# ---------------------------------------------------------------- real catalogs

def test_flipkart_demo_catalog(fk_catalog, fk_raw):
    items = fk_catalog.items
    assert fk_catalog.adapter == "flipkart"
    assert fk_catalog.image_root == "data/flipkart1050/images"
    assert len(items) == 1050 and fk_catalog.rejected.empty
    assert list(items.columns) == list(ITEM_COLUMNS) + ["row", "lines"]
    assert items["row"].tolist() == list(range(1050))
    assert items["item_id"].tolist() == fk_raw["uniq_id"].tolist()
    level1 = make_labels(items["category"], depth=1, min_items=10)
    counts = level1.value_counts()
    assert len(counts) == 7 and set(counts) == {150}
    assert "Watches" in counts.index
    assert (items["domain"] == "flipkart.com").all()
    assert (items["currency"] == "INR").all()
    assert not items["category"].str.contains(">>").any()
    # brand is empty for about a third of the rows: None, not ""
    assert 250 < items["brand"].isna().sum() < 450
    assert not (items["brand"] == "").any()
    # images are file names under image_root; three of them are absent on disk
    on_disk = items["image"].map(lambda f: (FLIPKART_DIR / "images" / f).is_file())
    assert (~on_disk).sum() == 3


def test_flipkart_adapter_is_detected_from_columns():
    cat = read_catalog(FLIPKART_CSV, CatalogConfig())
    assert cat.adapter == "flipkart"
    assert cat.items["category"].notna().all()


def test_flipkart_category_tree_and_price(fk_raw):
    tree = fk_raw.loc[0, "product_category_tree"]
    assert tree.startswith('["Home Furnishing >> ')
    assert parse_flipkart_tree(tree) == (
        "Home Furnishing > Curtains & Accessories > Curtains > "
        "Elegance Polyester Multicolor Abstract Eyelet Do...")  # truncated leaf kept as is
    assert parse_flipkart_tree('["A >> B') == "A > B"  # cut-short JSON still parses
    rows = fk_raw.iloc[:3].copy()
    rows.loc[1, "discounted_price"] = None  # falls back to retail_price
    items, _ = validate_items(adapt(rows, "flipkart"), FLIPKART)
    assert items.loc[0, "price"] == float(fk_raw.loc[0, "discounted_price"]) == 899.0
    assert items.loc[1, "price"] == float(fk_raw.loc[1, "retail_price"])


def test_bigbasket_all_rows_accounted_for():
    raw = read_table(require_dataset(BIGBASKET_CSV))
    assert len(raw) == 27555
    assert raw.loc[0, "index"] == "1" and raw.loc[0, "brand"] == "Sri Sri Ayurveda "
    cat = read_catalog(BIGBASKET_CSV, CatalogConfig())
    assert cat.adapter == "bigbasket"
    assert len(cat.items) + len(cat.rejected) == len(raw)
    assert sorted(cat.items["row"].tolist() + cat.rejected["row"].tolist()) == list(range(len(raw)))
    items = cat.items
    assert make_labels(items["category"], 1, 1).nunique() == 11
    assert items["category"].map(lambda c: c.count(CATEGORY_SEP)).eq(2).all()
    first = items.iloc[0]
    assert first["brand"] == "Sri Sri Ayurveda"  # stripped
    assert first["category"] == "Beauty & Hygiene > Hair Care > Hair Oil & Serum"
    assert first["price"] == 220.0 and first["domain"] == "bigbasket.com"
    assert items["image"].isna().all() and (items["description"] == "").all()


# ---------------------------------------------------------------- generic files

def test_generic_column_mapping(tmp_path, fk_raw):
    real = _sample(fk_raw, 40)
    renamed = pd.DataFrame({
        "sku": real["uniq_id"], "name": real["product_name"], "link": real["product_url"],
        "cost": real["discounted_price"], "description": real["description"],  # canonical name
    })
    path = tmp_path / "shop.csv"
    renamed.to_csv(path, index=False)
    cfg = CatalogConfig(columns={"item_id": "sku", "title": "name", "url": "link", "price": "cost"})
    cat = read_catalog(path, cfg)
    expected, _ = validate_items(adapt(real, "flipkart"), FLIPKART)
    assert cat.adapter == "generic" and cat.rejected.empty
    for col in ("item_id", "title", "description", "price", "url", "domain"):
        pd.testing.assert_series_equal(cat.items[col], expected[col], check_names=False)
    assert (cat.items["domain"] == "flipkart.com").all()  # derived from the URL
    assert cat.items["category"].isna().all() and cat.items["currency"].isna().all()


def test_missing_required_column_names_it(tmp_path, fk_raw):
    rows = _sample(fk_raw, 10).drop(columns=["product_name"])
    path = tmp_path / "no_title.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(CatalogError) as err:
        read_catalog(path, FLIPKART)
    msg = str(err.value)
    assert "title" in msg and "'product_name'" in msg and "no_title.csv" in msg
    assert "'uniq_id'" in msg  # the columns the file does have
    assert "item_id (" not in msg  # item_id is present: not reported
    assert isinstance(err.value, ValueError)

    with pytest.raises(CatalogError, match=r"item_id \(source column 'sku'\)"):
        read_catalog(path, CatalogConfig(columns={"item_id": "sku", "title": "pid"}))
    with pytest.raises(CatalogError, match="unknown canonical"):
        read_catalog(path, CatalogConfig(columns={"titel": "pid"}))


# ---------------------------------------------------------------- validation

def test_duplicates_and_missing_ids_rejected_with_reason(fk_raw):
    rows = adapt(_sample(fk_raw, 5), "flipkart")
    dup = rows.iloc[[1]].assign(title="a later copy")
    no_id = rows.iloc[[2]].assign(item_id="   ")
    table = pd.concat([rows, dup, no_id], ignore_index=True)
    items, rejected = validate_items(table, FLIPKART)
    assert len(items) == 5 and len(rejected) == 2
    assert list(rejected.columns) == list(REJECT_COLUMNS)
    assert rejected.to_dict("records") == [
        {"item_id": rows.loc[1, "item_id"], "row": 5, "reason": "duplicate item_id (first kept at row 1)",
         "lines": None, "raw": None},
        {"item_id": None, "row": 6, "reason": "missing item_id", "lines": None, "raw": None},
    ]
    kept = items.set_index("item_id").loc[rows.loc[1, "item_id"]]
    assert kept["row"] == 1 and kept["title"] == rows.loc[1, "title"]


def test_bad_prices_become_nan_and_rows_stay(fk_raw):
    rows = adapt(_sample(fk_raw, 9), "flipkart")
    raw_prices = ["1,299.00", "Rs. 899", "₹ 45.5", "-5", "0", "abc", "1e9", None, "inf"]
    rows["price"] = raw_prices
    items, rejected = validate_items(rows, FLIPKART)
    assert rejected.empty and len(items) == 9
    assert items["price"].tolist()[:3] == [1299.0, 899.0, 45.5]
    assert items["price"].iloc[3:].isna().all()


def test_text_cleaning(fk_raw):
    rows = adapt(_sample(fk_raw, 4), "flipkart")
    rows.loc[0, "title"] = "Ｗatch\x00with\x07bell\x1b"
    rows.loc[1, "description"] = "line one\nline\ttwo\r\n"
    rows.loc[2, ["title", "description"]] = ["  ", None]  # no text at all: still kept
    rows.loc[3, "brand"] = "  "
    rows.loc[3, "category"] = "  Watches>>Wrist   Watches > "
    items, rejected = validate_items(rows, CatalogConfig(max_text_chars=120))
    assert rejected.empty
    assert items.loc[0, "title"] == "Watch with bell"  # a control character is a space: words stay apart
    assert items.loc[1, "description"] == "line one\nline\ttwo"
    assert items.loc[2, "title"] == "" and items.loc[2, "description"] == ""
    assert items.loc[3, "brand"] is None
    assert items.loc[3, "category"] == "Watches > Wrist Watches"
    assert items["description"].str.len().max() <= 120
    assert (fk_raw["description"].str.len() > 120).any()


# ---------------------------------------------------------------- formats

def test_csv_jsonl_parquet_give_identical_items(tmp_path, fk_raw):
    real = _sample(fk_raw, 60)
    assert real["brand"].isna().any()  # missing values are part of the round trip
    paths = {"csv": tmp_path / "c.csv", "jsonl": tmp_path / "c.jsonl", "parquet": tmp_path / "c.parquet"}
    real.to_csv(paths["csv"], index=False)
    real.to_json(paths["jsonl"], orient="records", lines=True, force_ascii=False)
    real.to_parquet(paths["parquet"], index=False)
    got = {k: read_catalog(p, FLIPKART).items for k, p in paths.items()}
    # the physical lines are where a record is in its file: CSV records span lines, Parquet has none
    spans = got["csv"].pop("lines")
    assert spans.iloc[0] == "2" and spans.str.contains("-").any()
    assert got["jsonl"].pop("lines").tolist() == [str(i) for i in range(1, 61)]
    assert got["parquet"].pop("lines").isna().all()
    assert len(got["csv"]) == 60
    pd.testing.assert_frame_equal(got["csv"], got["jsonl"])
    pd.testing.assert_frame_equal(got["csv"], got["parquet"])
    for p in paths.values():  # streaming gives the same table, positions continuing
        chunks = list(iter_table_chunks(p, 25))
        assert [len(c) for c in chunks] == [25, 25, 10]
        assert chunks[2].index[0] == 50
        pd.testing.assert_frame_equal(pd.concat(chunks), read_table(p))
        whole = read_table(p)
        assert whole["__lines__"].tolist() == pd.concat(chunks)["__lines__"].tolist()


def test_ids_stay_strings(tmp_path):
    csv = tmp_path / "ids.csv"
    csv.write_text("item_id,title,price\n007,a,1\n12345678901234567890,b,\n", encoding="utf-8")
    assert read_catalog(csv).items["item_id"].tolist() == ["007", "12345678901234567890"]
    jl = tmp_path / "ids.jsonl"
    jl.write_text(json.dumps({"item_id": 123, "title": "a", "price": 5}) + "\n"
                  + json.dumps({"item_id": None, "title": "b"}) + "\n", encoding="utf-8")
    cat = read_catalog(jl)
    assert cat.items["item_id"].tolist() == ["123"] and cat.items.loc[0, "price"] == 5.0
    assert cat.rejected["reason"].tolist() == ["missing item_id"]
    # an integer column with a null must not turn into "123.0" (nor "<NA>")
    pq = tmp_path / "ids.parquet"
    pd.DataFrame({"item_id": pd.array([123, None], dtype="Int64"), "title": ["a", "b"]}).to_parquet(pq)
    assert read_table(pq)["item_id"].tolist() == ["123", None]
    pq_lib.write_table(pa.table({"item_id": [123, None]}), pq)  # no pandas metadata
    assert read_table(pq)["item_id"].tolist() == ["123", None]
    arr = tmp_path / "ids.json"  # a .json file holding one array of objects
    arr.write_text(json.dumps([{"item_id": 9, "title": "x"}, {"item_id": 10, "title": "y"}]))
    assert read_catalog(arr).items["item_id"].tolist() == ["9", "10"]


def test_unknown_or_unreadable_file(tmp_path):
    bad_ext = tmp_path / "catalog.xlsx"
    bad_ext.write_bytes(b"x")
    with pytest.raises(CatalogError, match="catalog.xlsx"):
        read_table(bad_ext)
    garbage = tmp_path / "broken.parquet"
    garbage.write_bytes(b"not a parquet file at all")
    with pytest.raises(CatalogError, match="broken.parquet"):
        read_table(garbage)
    with pytest.raises(CatalogError, match="absent.csv"):
        read_table(tmp_path / "absent.csv")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"item_id": "1"}\n{oops\n', encoding="utf-8")
    table = read_table(bad_json)  # a bad line is a broken row of its own, not a refusal of the file
    assert table["item_id"].tolist() == ["1", None]
    assert table["__error__"].iloc[0] is None and table["__error__"].iloc[1].startswith("invalid JSON")
    assert "(line 2)" in table["__error__"].iloc[1] and table["__raw__"].iloc[1] == "{oops"


# ---------------------------------------------------------------- labels

def test_category_at_depth():
    path = "Baby Care > Baby Bedding > Baby Blankets"
    assert category_at_depth(path, 1) == "Baby Care"
    assert category_at_depth(path, 2) == "Baby Care > Baby Bedding"
    assert category_at_depth(path, 9) == path
    assert category_at_depth(None, 2) is None


def test_fold_rare_on_real_level2_labels(fk_catalog):
    level2 = make_labels(fk_catalog.items["category"], depth=2, min_items=1)
    counts = level2.value_counts()
    assert len(counts) == 62
    tiny = counts[counts == 1].index
    assert "Computers > Software" in tiny
    folded = fold_rare(level2, min_items=5)
    assert folded[level2 == "Computers > Software"].tolist() == ["Computers"]
    big = level2.map(counts) >= 5
    assert folded[big].equals(level2[big])  # large categories untouched
    fcounts = folded.value_counts()
    assert all(k >= 5 or CATEGORY_SEP not in lab for lab, k in fcounts.items())
    # folding only moves items to their own top level
    pd.testing.assert_series_equal(folded.map(lambda s: category_at_depth(s, 1)),
                                   level2.map(lambda s: category_at_depth(s, 1)))


def test_fold_rare_deepest_first_and_none_kept():
    labels = pd.Series(["A > B > C"] * 8 + ["A > B"] * 3 + ["A > D"] * 1 + [None])
    folded = fold_rare(labels, min_items=10)
    assert folded.tolist()[:11] == ["A > B"] * 11  # the leaf kept its parent alive
    assert folded[11] == "A" and folded[12] is None
    assert fold_rare(pd.Series(["A"] * 2), min_items=10).tolist() == ["A", "A"]
