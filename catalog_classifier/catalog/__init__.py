"""Catalog input layer: read a catalog file into the canonical item table (see schema.py).

    cat = read_catalog("data/flipkart1050/flipkart_com-ecommerce_sample_1050.csv", cfg.catalog)
    cat.items      # schema.ITEM_COLUMNS + ["row"]
    cat.rejected   # item_id, row, reason, lines, raw: rows that could not be kept
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import CatalogConfig
from .adapters import adapt, adapter_names, detect_adapter, get_adapter, register_adapter, structural_columns
from .csv_reader import META_COLUMNS
from .errors import CatalogError
from .labels import category_at_depth, fold_rare, make_labels
from .readers import iter_table_chunks, read_table
from .validate import validate_items

__all__ = [
    "Catalog", "CatalogError", "read_catalog", "choose_adapter", "read_table", "iter_table_chunks",
    "adapt", "adapter_names", "detect_adapter", "get_adapter", "register_adapter",
    "validate_items", "category_at_depth", "fold_rare", "make_labels", "strict_columns", "META_COLUMNS",
]


@dataclass
class Catalog:
    items: pd.DataFrame
    rejected: pd.DataFrame
    source: str
    adapter: str
    # root that relative `image` paths resolve under; resolving and confinement are
    # the image loader's job
    image_root: str | None = None

    @property
    def n_rows(self) -> int:
        """Rows in the source file (= kept + rejected)."""
        return len(self.items) + len(self.rejected)


def choose_adapter(columns, cfg: CatalogConfig) -> str:
    """cfg.adapter when set; else a known catalog recognised by its columns; else "generic".

    An explicit column mapping means a generic file, so no detection then.
    """
    if cfg.adapter:
        get_adapter(cfg.adapter)  # fail early on a typo
        return cfg.adapter
    if cfg.columns:
        return "generic"
    return detect_adapter(columns) or "generic"


def strict_columns(cfg: CatalogConfig):
    """The reader's ``strict(header)``: source columns where a line break means a broken record."""
    return lambda header: structural_columns(choose_adapter(header, cfg), cfg.columns)


def read_catalog(path: str | Path, cfg: CatalogConfig | None = None) -> Catalog:
    """Read, adapt and validate one catalog file."""
    cfg = cfg or CatalogConfig()
    raw = read_table(path, strict=strict_columns(cfg))
    name = choose_adapter(raw.columns, cfg)
    canonical = adapt(raw, name, cfg.columns, source=str(path))
    items, rejected = validate_items(canonical, cfg, meta=raw[list(META_COLUMNS)])
    return Catalog(items=items, rejected=rejected, source=str(path), adapter=name,
                   image_root=cfg.image_root)
