"""Clean a canonical item table; every input row is either kept or rejected with a reason.

Only a row that cannot be identified is rejected: a record the reader found broken (its
error names the physical lines), no item_id, an id already taken, an id over MAX_ID_CHARS
or one that cannot be stored (NUL, lone surrogate). Ids are kept exactly as read (no NFKC,
no strip): they are the join key back to the source, so ``ABC123``, ``ＡＢＣ１２３`` and
``ABC123 `` are three items. Everything else is repaired in place: an unusable price becomes NaN, an empty brand
None, an item with neither title nor description is still kept (image, brand and
price can carry it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import CatalogConfig
from .cleaning import (bounded_raw, clean_category, clean_domain, clean_optional, clean_specs, clean_text,
                       has_surrogate, is_missing, parse_price)
from .csv_reader import ERROR, LINES, RAW
from .errors import CatalogError
from .schema import ITEM_COLUMNS, REJECT_COLUMNS, REQUIRED_COLUMNS

ROW_COLUMN = "row"
LINES_COLUMN = "lines"
MISSING_ID = "missing item_id"
MAX_ID_CHARS = 1024


def id_problem(v) -> str | None:
    """Why a raw id cannot be an item's key, or None; the id itself is never rewritten."""
    if v is None or is_missing(v):
        return MISSING_ID
    if len(v) > MAX_ID_CHARS:
        return f"item_id longer than {MAX_ID_CHARS} characters ({len(v)})"
    if "\x00" in v:
        return "item_id holds a NUL character"
    if has_surrogate(v):
        return "item_id is not valid Unicode (lone surrogate)"
    return None


def validate_items(df: pd.DataFrame, cfg: CatalogConfig | None = None, row_offset: int = 0,
                   meta: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(items, rejected)``.

    items: ITEM_COLUMNS + ["row", "lines"], one row per accepted input row, in input order.
    rejected: REJECT_COLUMNS (item_id, row, reason, lines, raw).
    ``row`` is the 0-based position in ``df`` plus ``row_offset`` (for streamed chunks).
    ``meta``: the reader's columns (csv_reader.META_COLUMNS) of the same rows, by position.
    Duplicates are only detected within ``df``.
    """
    cfg = cfg or CatalogConfig()
    absent = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if absent:
        raise CatalogError(f"item table lacks required column(s) {absent}; "
                           f"it has {list(map(str, df.columns))}")
    n = len(df)

    def values(col: str) -> list:
        return df[col].tolist() if col in df.columns else [None] * n

    def meta_col(col: str) -> list:  # str or None (a NaN from pandas is None)
        vals = meta[col].tolist() if meta is not None and col in meta.columns else [None] * n
        return [v if isinstance(v, str) else None for v in vals]

    ids = [None if v is None else str(v) for v in values("item_id")]
    lines, errors, raws = meta_col(LINES), meta_col(ERROR), meta_col(RAW)
    kept: list[int] = []
    rejected: list[tuple[str | None, int, str, str | None, str | None]] = []
    first_row: dict[str, int] = {}
    for pos, iid in enumerate(ids):
        row = pos + row_offset
        problem = errors[pos] or id_problem(iid)
        if problem:  # no usable id: the output keeps a bounded, storable copy in ``raw``
            raw = raws[pos] if errors[pos] else (None if problem == MISSING_ID else bounded_raw(iid))
            rejected.append((None, row, problem, lines[pos], raw))
        elif iid in first_row:
            rejected.append((iid, row, f"duplicate item_id (first kept at row {first_row[iid]})",
                             lines[pos], None))
        else:
            first_row[iid] = row
            kept.append(pos)

    cap = cfg.max_text_chars

    def pick(col: str) -> list:
        vals = values(col)
        return [vals[i] for i in kept]

    items = pd.DataFrame({
        "item_id": pd.Series([ids[i] for i in kept], dtype=object),
        "title": _obj(clean_text(v, cap) for v in pick("title")),
        "description": _obj(clean_text(v, cap) for v in pick("description")),
        "brand": _obj(clean_optional(v, cap) for v in pick("brand")),
        "price": pd.Series([parse_price(v) for v in pick("price")], dtype="float64"),
        "currency": _obj(_upper(clean_optional(v, cap)) for v in pick("currency")),
        "domain": _obj(clean_domain(v) for v in pick("domain")),
        "url": _obj(clean_optional(v, cap) for v in pick("url")),
        "image": _obj(None if is_missing(v) else str(v) for v in pick("image")),
        "category": _obj(clean_category(v) for v in pick("category")),
        "specs": _obj(clean_specs(v, cap) for v in pick("specs")),
        ROW_COLUMN: pd.Series(np.asarray(kept, dtype=np.int64) + row_offset, dtype="int64"),
        LINES_COLUMN: _obj(lines[i] for i in kept),
    })
    items = items[list(ITEM_COLUMNS) + [ROW_COLUMN, LINES_COLUMN]]
    rej = pd.DataFrame({
        "item_id": pd.Series([r[0] for r in rejected], dtype=object),
        "row": pd.Series([r[1] for r in rejected], dtype="int64"),
        "reason": pd.Series([r[2] for r in rejected], dtype=object),
        "lines": pd.Series([r[3] for r in rejected], dtype=object),
        "raw": pd.Series([r[4] for r in rejected], dtype=object),
    })[list(REJECT_COLUMNS)]
    if len(items) + len(rej) != n:  # the invariant this module exists for
        raise RuntimeError(f"validate_items accounted for {len(items) + len(rej)} of {n} rows")
    return items, rej


def _obj(values) -> pd.Series:
    return pd.Series(list(values), dtype=object)


def _upper(v: str | None) -> str | None:
    return v.upper() if v else v
