"""Hostile catalog input (issue 11, items 1-3): no row stops a night, none vanishes, ids join back.

Every input is built from real held-out demo rows with one thing broken, and run through the
real ``run_nightly`` (chunk size 8). Each case asserts exact accounting: the records the
reader parsed = the output rows, each exactly once, with the expected status and a reason.
Bad images are covered in test_nightly_bad_input.py; here only the image *path* classes.
"""
from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from catalog_classifier.catalog.cleaning import clean_text
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.features.images import ESCAPES_ROOT, REFUSED_PATH, REMOTE
from catalog_classifier.features.text import normalize_text
from catalog_classifier.nightly.batch.job import run_nightly

from conftest import DEMO_IMAGES
from nightly_helpers import night_config, raw_rows, read_predictions

CHUNK = 8
OK = ("ok", None)  # predicted (accepted or review), no image issue expected


def _ins(v: str, s: str) -> str:
    return v[:3] + s + v[3:]


# (case id, source column, new value or old -> new, expected (kind, pattern))
# kind: "ok" (predicted; pattern matches image_issue when given) or "rej" (pattern matches reason)
FLIPKART_COLS = ["uniq_id", "crawl_timestamp", "product_url", "product_name", "product_category_tree", "pid",
                 "retail_price", "discounted_price", "image", "is_FK_Advantage_product", "description",
                 "product_rating", "overall_rating", "brand", "product_specifications"]
NUL_CASES = [(f"nul-in-{c}", c, lambda v: _ins(v, "\x00"),
              ("rej", r"^item_id holds a NUL character$") if c == "uniq_id"
              else ("ok", re.escape(REFUSED_PATH)) if c == "image" else OK) for c in FLIPKART_COLS]
SURROGATE_CASES = [
    ("surrogate-in-id", "uniq_id", lambda v: v + "\ud83d", ("rej", r"^item_id is not valid Unicode")),
    ("surrogate-in-title", "product_name", lambda v: v + " \ud83d", OK),
    ("surrogate-in-image", "image", lambda v: "\ud83d" + v, ("ok", re.escape(REFUSED_PATH))),
    ("surrogate-in-brand", "brand", lambda v: "\udc80" + v, OK),
    ("surrogate-in-description", "description", lambda v: "\ude00" + v, OK),
]
VALUE_CASES = [
    ("formula-hyperlink-title", "product_name", '=HYPERLINK("http://evil.example/x","click")', OK),
    ("formula-plus-brand", "brand", "+cmd|' /C calc'!A0", OK),
    ("formula-minus-description", "description", "-2+3+cmd|' /C calc'!A0", OK),
    ("formula-at-title", "product_name", "@SUM(1+1)*cmd|' /C calc'!A0", OK),
    ("formula-id", "uniq_id", "=1+2", OK),
    ("at-id", "uniq_id", "@sku-1", OK),
    ("huge-title", "product_name", lambda v: (v + " ") * 20_000, OK),
    ("huge-description", "description", lambda v: ("x" * 1000 + " ") * 2000, OK),
    ("id-1024", "uniq_id", lambda v: (v * 40)[:1024], OK),
    ("id-1025", "uniq_id", lambda v: (v * 40)[:1025], ("rej", r"^item_id longer than 1024 characters \(1025\)$")),
    ("image-etc-passwd", "image", "/etc/passwd", ("ok", re.escape(ESCAPES_ROOT))),
    ("image-dotdot", "image", "../../../../etc/passwd", ("ok", re.escape(ESCAPES_ROOT))),
    ("image-file-uri", "image", "file:///etc/shadow", ("ok", re.escape(ESCAPES_ROOT))),
    ("image-url", "image", "http://images.example/x.jpg", ("ok", re.escape(REMOTE))),
    ("mixed-scripts-emoji-title", "product_name", lambda v: v + " 🎧🔥 Наушники ヘッドホン हेडफ़ोन سماعات 👨‍👩‍👧", OK),
    ("emoji-id", "uniq_id", lambda v: v + "-🎧", OK),
    ("bidi-escape-title", "product_name", lambda v: "\x1b[31m\u202e" + v + "\u200b\r", OK),
    ("bath-nul-towel", "product_name", "Cotton Bath\x00Towel", OK),
    ("id-variant-plain", "uniq_id", "ABC123", OK),
    ("id-variant-fullwidth", "uniq_id", "ＡＢＣ１２３", OK),
    ("id-variant-trailing-space", "uniq_id", "ABC123 ", OK),
    ("id-variant-leading-space", "uniq_id", " ABC123", OK),
    ("id-variant-lower", "uniq_id", "abc123", OK),
    ("id-variant-nbsp", "uniq_id", "ABC123\u00a0", OK),
    ("id-exact-duplicate", "uniq_id", "ABC123", ("rej", r"^duplicate item_id \(first kept at row \d+\)$")),
    ("id-empty", "uniq_id", "", ("rej", r"^missing item_id$")),
    ("id-blank", "uniq_id", " \t ", ("rej", r"^missing item_id$")),
    ("price-nul-text", "discounted_price", "Rs.\x00 -\ud83d", OK),
    ("surrogate-in-specs", "product_specifications", lambda v: v[:40] + "\ud83d" + v[40:], OK),
    ("specs-cut-short", "product_specifications", lambda v: v[: len(v) // 2], OK),
    ("specs-formula", "product_specifications", '=HYPERLINK("http://evil.example/x","click")', OK),
    ("specs-json-too-deep", "product_specifications", "[" * 50_000 + "]" * 50_000, OK),
    ("specs-huge", "product_specifications", lambda v: v[:-2] + ', {"key"=>"k", "value"=>"v"}' * 20_000 + "]}", OK),
]
FIELD_CASES = NUL_CASES + SURROGATE_CASES + VALUE_CASES


def _rows_with_images(heldout_items, n: int) -> pd.DataFrame:
    rows = raw_rows(heldout_items["item_id"])
    rows = rows[rows["image"].map(lambda f: (DEMO_IMAGES / f).is_file())]
    return rows.head(n).reset_index(drop=True)


def _apply(rows: pd.DataFrame, cases) -> pd.DataFrame:
    rows = rows.astype(object)  # pandas' Arrow-backed strings cannot hold a lone surrogate
    for i, (_, col, value, _) in enumerate(cases):
        rows.loc[i, col] = value(rows.loc[i, col]) if callable(value) else value
    return rows


def _night(path, tmp_path, name: str):
    clf = CatalogClassifier.load(_night.model_dir)
    out = tmp_path / name
    res = run_nightly(path, out, clf, night_config(CHUNK), progress=False)
    report = json.loads((out / "report.json").read_text())
    return read_predictions(out), report, res, clf


@pytest.fixture(scope="module")
def field_nights(heldout_items, trained_model_dir, tmp_path_factory):
    """The field cases as one CSV (BOM, CRLF, lone surrogates as their UTF-8-ish bytes) and one JSONL night."""
    _night.model_dir = trained_model_dir
    tmp = tmp_path_factory.mktemp("hostile-fields")
    rows = _apply(_rows_with_images(heldout_items, len(FIELD_CASES) + 4), FIELD_CASES)
    text = rows.to_csv(index=False, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    csv_path = tmp / "fields.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass"))  # BOM + CESU bytes
    jl_path = tmp / "fields.jsonl"
    # json.dumps writes a lone surrogate as the escape "\ud83d": valid JSON, read back as is
    jl_path.write_text("".join(json.dumps(r) + "\n" for r in rows.to_dict("records")), encoding="ascii")
    return {"rows": rows, "csv": _night(csv_path, tmp, "csv"), "jsonl": _night(jl_path, tmp, "jsonl")}


def _check_row(r: pd.Series, src_id: str, expect, clf) -> None:
    kind, pattern = expect
    if kind == "rej":
        assert r["status"] == "rejected" and re.search(pattern, r["reason"]), (r["status"], r["reason"])
        assert pd.isna(r["category"])
        return
    assert r["status"] in ("accepted", "review"), (r["status"], r["reason"])
    assert r["item_id"] == src_id  # the join key, exactly as read
    assert r["category"] in clf.labels_ and 0 < r["confidence"] <= 1
    if pattern is None:
        assert pd.isna(r["image_issue"]), r["image_issue"]
    else:
        assert isinstance(r["image_issue"], str) and re.search(pattern, r["image_issue"]), r["image_issue"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("case", range(len(FIELD_CASES)), ids=[c[0] for c in FIELD_CASES])
def test_field_case(field_nights, fmt, case):
    pred, report, res, clf = field_nights[fmt]
    rows = field_nights["rows"]
    assert pred["row"].tolist() == list(range(len(rows)))  # every record exactly once, in order
    name, col, _, expect = FIELD_CASES[case]
    src_id = rows.loc[case, "uniq_id"]
    if fmt == "csv" and has_lone_surrogate(src_id):
        src_id = src_id.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")
    _check_row(pred.loc[case], src_id, expect, clf)
    if name == "bath-nul-towel":  # the NUL is a space, so the towel review rule still fires
        assert pred.loc[case, "rule_id"] == "towels-baby-or-bath-linen"
        assert pred.loc[case, "status"] == "review"


def has_lone_surrogate(s: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_field_night_accounting(field_nights, fmt):
    pred, report, res, clf = field_nights[fmt]
    rows = field_nights["rows"]
    n = len(rows)
    assert report["summary"]["input"]["records"] == report["summary"]["input"]["rows_out"] == n == len(pred)
    if fmt == "jsonl":
        assert report["summary"]["input"]["physical_lines"] == n
        assert pred["lines"].tolist() == [str(i) for i in range(1, n + 1)]
    else:  # CRLF ends a record; LF and CR inside quoted fields are physical line breaks too
        text = rows.to_csv(index=False, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        assert report["summary"]["input"]["physical_lines"] == len(re.findall(r"\r\n|\r|\n", text))
        first = [int(s.split("-")[0]) for s in pred["lines"]]
        assert first[0] == 2 and first == sorted(first)
    rejected = [c for c in FIELD_CASES if c[3][0] == "rej"]
    assert res.counts["rejected"] == len(rejected) and sum(res.counts.values()) == n
    # the three id variants and the untouched ids all come out as distinct items
    ids = pred.loc[pred["status"] != "rejected", "item_id"]
    assert ids.is_unique and {"ABC123", "ＡＢＣ１２３", "ABC123 ", " ABC123", "abc123"} <= set(ids)
    # untouched rows get what they get with no hostile neighbours
    clean = pred.loc[len(FIELD_CASES):]
    assert len(clean) == 4
    alone = _night_alone(rows.loc[len(FIELD_CASES):], clf)
    assert clean["category"].tolist() == alone["category"].tolist()
    np.testing.assert_allclose(clean["confidence"], alone["confidence"], rtol=1e-5)


def _night_alone(rows: pd.DataFrame, clf) -> pd.DataFrame:
    from catalog_classifier.catalog import read_catalog

    buf = io.StringIO()
    rows.to_csv(buf, index=False, quoting=csv.QUOTE_ALL)
    path = _night.model_dir.parent / "alone.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    cat = read_catalog(path, night_config(CHUNK).catalog)
    return clf.predict(cat.items, image_root=str(DEMO_IMAGES))


# ------------------------------------------------------------------ CSV structure

GENERIC = ["item_id", "title", "brand", "price", "url", "image", "category"]


def _generic_rows(heldout_items, n: int) -> pd.DataFrame:
    """Real demo rows in a plain generic layout (no quotes in any field unless needed)."""
    raw = raw_rows(heldout_items["item_id"]).head(n)
    tree = raw["product_category_tree"].map(lambda v: json.loads(v)[0].split(" >> ")[0])
    return pd.DataFrame({"item_id": raw["uniq_id"], "title": raw["product_name"].str.replace('"', ""),
                         "brand": raw["brand"], "price": raw["discounted_price"], "url": raw["product_url"],
                         "image": raw["image"], "category": tree}).reset_index(drop=True)


def _generic_night(path, tmp_path, name):
    clf = CatalogClassifier.load(_night.model_dir)
    out = tmp_path / name
    cfg = night_config(CHUNK, catalog={"adapter": None})
    run_nightly(path, out, clf, cfg, progress=False)
    return read_predictions(out), json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("field", ["title", "category"])
@pytest.mark.parametrize("where", [0, 14, 29], ids=["start", "middle", "end"])
def test_unbalanced_quote_swallows_nothing(heldout_items, trained_model_dir, tmp_path, where, field):
    """An opening quote never closed: the record's first line is rejected, the rest read normally.

    A quote opening the last field swallows the following lines into it (a plain CSV parser
    reads fewer records than there are rows): they must come back as the rows they are.
    """
    _night.model_dir = trained_model_dir
    rows = _generic_rows(heldout_items, 30)
    lines = rows.to_csv(index=False, quoting=csv.QUOTE_MINIMAL).splitlines(keepends=True)
    assert len(lines) == 31  # one physical line per record
    if field == "title":
        head, sep, rest = lines[where + 1].partition(",")
    else:
        head, sep, rest = lines[where + 1].rpartition(",")
    lines[where + 1] = head + sep + '"' + rest  # the field now opens a quote
    if field == "category" and where == 0:  # what a plain parser makes of it: rows swallowed
        assert len(list(csv.DictReader(io.StringIO("".join(lines))))) < 29
    path = tmp_path / "quote.csv"
    path.write_text("".join(lines), encoding="utf-8")
    pred, report = _generic_night(path, tmp_path, "night")
    assert len(pred) == 30 and pred["row"].tolist() == list(range(30))
    bad = pred[pred["status"] == "rejected"]
    assert bad["row"].tolist() == [where] and bad["lines"].tolist() == [str(where + 2)]
    assert bad["reason"].iloc[0].startswith("malformed CSV record") and bad["item_id"].isna().all()
    assert bad["raw"].iloc[0] == lines[where + 1].rstrip("\n")
    good = pred[pred["status"] != "rejected"]
    assert good["item_id"].tolist() == rows.drop(index=where)["item_id"].tolist()
    assert good["lines"].tolist() == [str(i + 2) for i in range(30) if i != where]
    assert report["summary"]["input"] == {"physical_lines": 31, "records": 30, "rows_out": 30}


def test_structural_csv_damage(heldout_items, trained_model_dir, tmp_path):
    """Truncated, extra-field, shifted, id-with-line-break, blank line, last line cut: each one row."""
    _night.model_dir = trained_model_dir
    rows = _generic_rows(heldout_items, 24)
    lines = rows.to_csv(index=False, quoting=csv.QUOTE_ALL).splitlines(keepends=True)
    assert len(lines) == 25
    fields = [next(csv.reader([ln])) for ln in lines]

    def line(vals):
        return ",".join('"' + v.replace('"', '""') + '"' for v in vals) + "\n"

    lines[3] = line(fields[3][:3])  # record 2: truncated (3 of 7 fields)
    lines[5] = line(fields[5] + ["surplus"])  # record 4: an extra field
    lines[7] = line(fields[7][:1] + fields[7][2:])  # record 6: shifted by a missing title
    lines[9] = line([fields[9][0][:8] + "\n" + fields[9][0][8:]] + fields[9][1:])  # record 8: id with line break
    lines[11] = "\n" + lines[11]  # a blank line before record 10: not a record
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # the file ends in the middle of the last record
    path = tmp_path / "damaged.csv"
    path.write_text("".join(lines), encoding="utf-8")
    pred, report = _generic_night(path, tmp_path, "night")
    n_records = 24 + 1  # the id with a line break: its first line is rejected, its second line is read
    assert pred["row"].tolist() == list(range(n_records))
    assert report["summary"]["input"] == {"physical_lines": 27, "records": n_records, "rows_out": n_records}
    by_line = {r["lines"]: r for _, r in pred.iterrows()}
    expect = {"4": "3 fields, the header has 7", "6": "8 fields, the header has 7",
              "8": "6 fields, the header has 7", "10": "line break inside field 'item_id'",
              "27": "malformed CSV record: "}
    for ln, why in expect.items():
        r = by_line[ln]
        assert r["status"] == "rejected" and why in r["reason"] and f"(line {ln})" in r["reason"], (ln, r["reason"])
        assert isinstance(r["raw"], str) and 0 < len(r["raw"]) <= 1000
    # the id's second line is what a permissive parser makes of it: a row of its own
    assert by_line["11"]["item_id"] == fields[9][0][8:] + '"'
    assert (pred["status"] == "rejected").sum() == len(expect)
    kept = pred[pred["status"] != "rejected"]
    assert kept["category"].notna().all()
    intact = [fields[i][0] for i in range(1, 24) if i not in (3, 5, 7, 9)]
    assert set(intact) <= set(kept["item_id"])


def test_legit_multiline_descriptions_stay_one_record(heldout_items, trained_model_dir, tmp_path):
    """Quoted multi-line descriptions (174 of the demo's 1,050 rows) are one record each."""
    _night.model_dir = trained_model_dir
    rows = raw_rows(heldout_items["item_id"])
    multi = rows[rows["description"].str.contains("\n")].head(12)
    assert len(multi) == 12
    path = tmp_path / "multi.csv"
    multi.to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    pred, report, res, clf = _night(path, tmp_path, "night")
    assert len(pred) == 12 and (pred["status"] != "rejected").all()
    assert pred["item_id"].tolist() == multi["uniq_id"].tolist()
    spans = [tuple(map(int, s.split("-"))) for s in pred["lines"]]
    assert all(b > a for a, b in spans) and spans[0][0] == 2
    assert all(spans[k + 1][0] == spans[k][1] + 1 for k in range(11))  # contiguous, none skipped


def test_bad_json_lines_are_rows(heldout_items, trained_model_dir, tmp_path):
    _night.model_dir = trained_model_dir
    rows = raw_rows(heldout_items["item_id"]).head(20)
    recs = [json.dumps(r, ensure_ascii=False) for r in rows.to_dict("records")]
    recs[3] = recs[3][:40]  # cut short
    recs[6] = json.dumps([rows.loc[6, "uniq_id"]])  # valid JSON, not an object
    recs[9] = "42"
    recs[12] = "{'uniq_id': 'single quotes'}"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(recs[:15]) + "\n\n" + "\n".join(recs[15:]) + "\n", encoding="utf-8")
    pred, report, res, clf = _night(path, tmp_path, "night")
    assert pred["row"].tolist() == list(range(20))
    bad = pred[pred["status"] == "rejected"]
    assert bad["row"].tolist() == [3, 6, 9, 12]
    assert bad["lines"].tolist() == ["4", "7", "10", "13"]
    assert [r.split(":")[0] for r in bad["reason"]] == ["invalid JSON", "expected a JSON object, got list (line 7)",
                                                          "expected a JSON object, got int (line 10)", "invalid JSON"]
    assert bad["raw"].tolist()[0] == recs[3]
    assert pred.loc[16, "lines"] == "18"  # the blank line is counted, not a record
    assert report["summary"]["input"] == {"physical_lines": 21, "records": 20, "rows_out": 20}


# ------------------------------------------------------------------ per-row stage failures

def test_a_row_that_fails_to_featurize_is_rejected_alone(heldout_items, trained_model_dir, tmp_path, monkeypatch):
    """Bisection: the failing row is rejected naming stage and error; the others equal an undisturbed run."""
    _night.model_dir = trained_model_dir
    rows = _rows_with_images(heldout_items, 30)
    path = tmp_path / "c.csv"
    rows.to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    before, _, _, _ = _night(path, tmp_path, "undisturbed")
    poison = clean_text(rows.loc[13, "product_name"])
    real_inputs = CatalogClassifier.inputs

    def inputs(self, items, *a, **kw):  # a test double: the library fails on one real title
        if (items["title"] == poison).any():
            "\ud83d".encode("utf-8")
        return real_inputs(self, items, *a, **kw)

    monkeypatch.setattr(CatalogClassifier, "inputs", inputs)
    pred, report, res, clf = _night(path, tmp_path, "disturbed")
    assert pred["row"].tolist() == list(range(30))
    r = pred.loc[13]
    assert r["status"] == "rejected" and r["item_id"] == rows.loc[13, "uniq_id"]
    assert r["reason"].startswith("featurize failed: UnicodeEncodeError: ") and len(r["reason"]) <= 300
    others = pred.drop(index=13).reset_index(drop=True)
    ref = before.drop(index=13).reset_index(drop=True)
    cols = ["item_id", "status", "category", "confidence", "top1", "top2", "image_issue", "rule_id", "lines"]
    pd.testing.assert_frame_equal(others[cols], ref[cols])
    assert report["summary"]["rejections"] == {r["reason"]: 1}


def test_one_normalisation_for_catalog_and_features():
    s = "Ｂath\x00Towel\r\n\ud83d  \u200bx"
    assert clean_text(s) == "Bath Towel\n\ufffd  \u200bx"
    assert normalize_text(s) == "bath towel \ufffd x"
    assert normalize_text(s) == normalize_text(clean_text(s))
