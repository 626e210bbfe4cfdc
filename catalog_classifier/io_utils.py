"""Atomic writes (a reader never sees a half-written file) and spreadsheet-safe CSV cells."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# OWASP CSV injection: a cell starting with one of these is a formula to a spreadsheet
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def escape_cell(value):
    """Prefix ``'`` to a text cell a spreadsheet would run as a formula (OWASP's rule).

    A cell that already starts with ``'`` before a trigger gets one more, so ``unescape_cell``
    gives back exactly what was written. A plain number (``-5``, ``+3.2``) is a number, not a
    formula, and stays as it is; non-text values are never touched.
    """
    if not isinstance(value, str) or not value:
        return value
    body = value.lstrip("'")
    if not body or body[0] not in FORMULA_TRIGGERS:
        return value
    if not value.startswith("'") and _PLAIN_NUMBER.fullmatch(value):
        return value
    return "'" + value


def unescape_cell(value):
    """The inverse of ``escape_cell``."""
    if isinstance(value, str) and value.startswith("'"):
        body = value.lstrip("'")
        if body and body[0] in FORMULA_TRIGGERS:
            return value[1:]
    return value


def escape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every text cell escaped; numeric columns are left as they are."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c].dtype):
            out[c] = out[c].map(escape_cell, na_action="ignore")
    return out


def atomic_write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Parquet, or CSV (for people: every text cell goes through ``escape_cell``)."""
    path = Path(path)
    if path.suffix == ".csv":
        safe = escape_frame(df)
        # \r\n records: the csv writer then quotes a field holding a bare CR (with "\n" it does not,
        # and the CR ends the record for every reader)
        return _atomic(path, lambda t: safe.to_csv(t, index=False, lineterminator="\r\n"))
    return _atomic(path, lambda t: df.to_parquet(t, index=False))


def atomic_write_json(obj, path: str | Path) -> Path:
    return _atomic(Path(path), lambda t: Path(t).write_text(
        json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8"))


def atomic_write_text(text: str, path: str | Path) -> Path:
    return _atomic(Path(path), lambda t: Path(t).write_text(text, encoding="utf-8"))
