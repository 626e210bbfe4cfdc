"""Adapters: map a raw catalog table onto the canonical item columns (schema.ITEM_COLUMNS).

An adapter returns raw values (cleaning is validate.py's job) with the input's index,
so every output row is still the input row at the same position. Ids pass through
exactly as read: they are the join key back to the source.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from .cleaning import domain_from_url, is_missing, object_series, parse_price
from .csv_reader import META_COLUMNS
from .errors import CatalogError
from .schema import CATEGORY_SEP, ITEM_COLUMNS, REQUIRED_COLUMNS

AdapterFn = Callable[[pd.DataFrame, Mapping[str, str]], pd.DataFrame]

_REGISTRY: dict[str, AdapterFn] = {}

# canonical column -> source column, for the known catalogs (also used in error messages)
FLIPKART_COLUMNS = {
    "item_id": "uniq_id", "title": "product_name", "description": "description", "brand": "brand",
    "price": "discounted_price", "url": "product_url", "image": "image",
    "category": "product_category_tree", "specs": "product_specifications",
}
BIGBASKET_COLUMNS = {
    "item_id": "index", "title": "product", "brand": "brand", "price": "sale_price",
    "category": "category",
}
BIGBASKET_LEVELS = ("category", "sub_category", "type")

# columns that identify a known catalog when no adapter is configured
_SIGNATURES = {"flipkart": {"uniq_id", "product_category_tree"},
               "bigbasket": {"product", "sub_category"}}


def register_adapter(name: str) -> Callable[[AdapterFn], AdapterFn]:
    def deco(fn: AdapterFn) -> AdapterFn:
        _REGISTRY[name] = fn
        return fn
    return deco


def adapter_names() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter(name: str) -> AdapterFn:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CatalogError(f"unknown catalog adapter {name!r}; known: {adapter_names()}") from None


# canonical fields that never legitimately hold a line break (a CSV record where one does is broken)
STRUCTURAL_FIELDS = ("item_id", "price", "currency", "image", "brand", "domain", "url", "category")


def structural_columns(adapter: str, columns: Mapping[str, str] | None = None) -> set[str]:
    """Source columns of ``adapter`` that feed STRUCTURAL_FIELDS (csv_reader's strict columns)."""
    if adapter == "flipkart":
        m = FLIPKART_COLUMNS
        return {m[c] for c in STRUCTURAL_FIELDS if c in m} | {"retail_price"}
    if adapter == "bigbasket":
        m = BIGBASKET_COLUMNS
        return {m[c] for c in STRUCTURAL_FIELDS if c in m} | set(BIGBASKET_LEVELS)
    columns = columns or {}
    return {columns.get(c, c) for c in STRUCTURAL_FIELDS}


def file_columns(df: pd.DataFrame) -> list[str]:
    """The file's own columns (without the reader's reserved ones), for messages."""
    return [str(c) for c in df.columns if c not in META_COLUMNS]


def detect_adapter(columns: Iterable[str]) -> str | None:
    """Name of the known catalog whose signature columns are all present, else None."""
    cols = set(columns)
    for name, signature in _SIGNATURES.items():
        if signature <= cols:
            return name
    return None


def adapt(df: pd.DataFrame, adapter: str = "generic", columns: Mapping[str, str] | None = None,
          source: str | None = None) -> pd.DataFrame:
    """Canonical table (ITEM_COLUMNS, same index as ``df``) from a raw table.

    ``columns`` ({canonical: source column}) is only meaningful for the generic adapter.
    ``source`` (the file name) is only used to make error messages precise.
    """
    if columns and adapter != "generic":
        raise CatalogError(f"a column mapping applies to the generic adapter only, "
                           f"not to {adapter!r} (mapping: {dict(columns)})")
    try:
        return get_adapter(adapter)(df, dict(columns or {}))
    except CatalogError as e:
        if source and source not in str(e):
            raise CatalogError(f"catalog file {source!r}: {e}") from e
        raise


def _require(df: pd.DataFrame, expected: Mapping[str, str], adapter: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if expected.get(c) not in df.columns]
    if missing:
        wanted = ", ".join(f"{c} (source column {expected.get(c, c)!r})" for c in missing)
        raise CatalogError(f"missing required column(s) for adapter {adapter!r}: {wanted}; "
                           f"the file has columns {file_columns(df)}")


def _col(df: pd.DataFrame, name: str | None) -> pd.Series:
    if name is not None and name in df.columns:
        return object_series(df[name])
    return pd.Series(None, index=df.index, dtype=object)


def _const(df: pd.DataFrame, value: Any) -> pd.Series:
    return pd.Series(value, index=df.index, dtype=object)


def _frame(parts: Mapping[str, pd.Series], index: pd.Index) -> pd.DataFrame:
    cols = {c: object_series(parts[c], index=index) for c in ITEM_COLUMNS}
    # a domain missing on a row with a URL is the URL's host
    cols["domain"] = object_series(
        [domain_from_url(u) if is_missing(d) else d for d, u in zip(cols["domain"], cols["url"])],
        index=index)
    return pd.DataFrame(cols, index=index)


def parse_flipkart_tree(v: Any) -> str | None:
    """'["A >> B >> Name..."]' -> 'A > B > Name...' (the path is kept whole; depth is chosen later)."""
    if is_missing(v):
        return None
    s = str(v).strip()
    try:
        parsed: Any = json.loads(s)
    except ValueError:  # not valid JSON (e.g. cut short): peel the brackets and quotes by hand
        parsed = s.strip("[]").strip().strip('"')
    if isinstance(parsed, list):
        parsed = next((p for p in parsed if isinstance(p, str) and p.strip()), None)
    if not isinstance(parsed, str):
        return None
    parts = [p.strip() for p in parsed.split(">>")]
    return CATEGORY_SEP.join(p for p in parts if p) or None


@register_adapter("flipkart")
def flipkart(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    m = FLIPKART_COLUMNS
    _require(df, m, "flipkart")
    discounted, retail = _col(df, "discounted_price"), _col(df, "retail_price")
    use_retail = discounted.map(lambda v: math.isnan(parse_price(v)))
    price = discounted.where(~use_retail, retail)
    return _frame({
        "item_id": _col(df, m["item_id"]), "title": _col(df, m["title"]),
        "description": _col(df, m["description"]), "brand": _col(df, m["brand"]),
        "price": price, "currency": _const(df, "INR"), "url": _col(df, m["url"]),
        "domain": _col(df, m["url"]).map(domain_from_url), "image": _col(df, m["image"]),
        "category": _col(df, m["category"]).map(parse_flipkart_tree), "specs": _col(df, m["specs"]),
    }, df.index)


@register_adapter("bigbasket")
def bigbasket(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    m = BIGBASKET_COLUMNS
    _require(df, m, "bigbasket")
    levels = [_col(df, c) for c in BIGBASKET_LEVELS]
    category = pd.Series(
        [CATEGORY_SEP.join(str(p).strip() for p in parts if not is_missing(p)) or None
         for parts in zip(*levels)], index=df.index, dtype=object)
    return _frame({
        "item_id": _col(df, m["item_id"]), "title": _col(df, m["title"]),
        "description": _const(df, ""), "brand": _col(df, m["brand"]).map(
            lambda v: None if is_missing(v) else str(v).strip()),
        "price": _col(df, m["price"]), "currency": _const(df, "INR"),
        "domain": _const(df, "bigbasket.com"), "url": _const(df, None), "image": _const(df, None),
        "category": category, "specs": _const(df, ""),
    }, df.index)


@register_adapter("generic")
def generic(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """Columns named canonically map to themselves; ``columns`` maps the others."""
    unknown = sorted(set(columns) - set(ITEM_COLUMNS))
    if unknown:
        raise CatalogError(f"column mapping has unknown canonical column(s) {unknown}; "
                           f"valid ones are {list(ITEM_COLUMNS)}")
    mapping = {c: columns.get(c, c) for c in ITEM_COLUMNS}
    _require(df, mapping, "generic")
    absent = {c: s for c, s in columns.items() if s not in df.columns}
    if absent:
        raise CatalogError(f"column mapping names column(s) the file does not have: {absent}; "
                           f"the file has columns {file_columns(df)}")
    return _frame({c: _col(df, mapping[c]) for c in ITEM_COLUMNS}, df.index)
