"""Shared by the nightly tests: real catalog rows written as files, a run config."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from conftest import DEMO_CSV, fast_config


def raw_rows(item_ids) -> pd.DataFrame:
    """The demo CSV's own rows (all columns, as strings) for these item ids, in file order."""
    raw = pd.read_csv(DEMO_CSV, dtype=str, keep_default_na=False)
    return raw[raw["uniq_id"].isin(set(item_ids))].reset_index(drop=True)


def write_csv(rows: pd.DataFrame, path: Path) -> Path:
    # every field quoted: pandas leaves a bare carriage return unquoted, which ends a CSV record
    rows.to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    return path


def night_config(chunk_size: int = 64, tracking: dict | None = None, **sections):
    """fast_config with MLflow off (unless ``tracking`` is given) and the nightly chunk size."""
    return fast_config(tracking=tracking or {"enabled": False},
                       nightly={"chunk_size": chunk_size, "audit_rate": 0.05}, **sections)


def read_predictions(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions.parquet").sort_values("row").reset_index(drop=True)
