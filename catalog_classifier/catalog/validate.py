"""Clean a canonical item table; every input row is either kept or rejected with a reason.

Only a row that cannot be identified (no item_id, or an id already taken) is rejected.
Everything else is repaired in place: an unusable price becomes NaN, an empty brand
None, an item with neither title nor description is still kept (image, brand and
price can carry it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import CatalogConfig
from .cleaning import clean_category, clean_domain, clean_optional, clean_text, is_missing, parse_price
from .errors import CatalogError
from .schema import ITEM_COLUMNS, REJECT_COLUMNS, REQUIRED_COLUMNS

ROW_COLUMN = "row"
MISSING_ID = "missing item_id"


def validate_items(df: pd.DataFrame, cfg: CatalogConfig | None = None,
                   row_offset: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(items, rejected)``.

    items: ITEM_COLUMNS + ["row"], one row per accepted input row, in input order.
    rejected: REJECT_COLUMNS (item_id, row, reason).
    ``row`` is the 0-based position in ``df`` plus ``row_offset`` (for streamed chunks).
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

    ids = [clean_text(v) for v in values("item_id")]
    kept: list[int] = []
    rejected: list[tuple[str | None, int, str]] = []
    first_row: dict[str, int] = {}
    for pos, iid in enumerate(ids):
        row = pos + row_offset
        if not iid:
            rejected.append((None, row, MISSING_ID))
        elif iid in first_row:
            rejected.append((iid, row, f"duplicate item_id (first kept at row {first_row[iid]})"))
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
        ROW_COLUMN: pd.Series(np.asarray(kept, dtype=np.int64) + row_offset, dtype="int64"),
    })
    items = items[list(ITEM_COLUMNS) + [ROW_COLUMN]]
    rej = pd.DataFrame({
        "item_id": pd.Series([r[0] for r in rejected], dtype=object),
        "row": pd.Series([r[1] for r in rejected], dtype="int64"),
        "reason": pd.Series([r[2] for r in rejected], dtype=object),
    })[list(REJECT_COLUMNS)]
    if len(items) + len(rej) != n:  # the invariant this module exists for
        raise RuntimeError(f"validate_items accounted for {len(items) + len(rej)} of {n} rows")
    return items, rej


def _obj(values) -> pd.Series:
    return pd.Series(list(values), dtype=object)


def _upper(v: str | None) -> str | None:
    return v.upper() if v else v
