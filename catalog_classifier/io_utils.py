"""Atomic writes: a reader never sees a half-written file."""
from __future__ import annotations

import json
import os
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


def atomic_write_table(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix == ".csv":
        return _atomic(path, lambda t: df.to_csv(t, index=False))
    return _atomic(path, lambda t: df.to_parquet(t, index=False))


def atomic_write_json(obj, path: str | Path) -> Path:
    return _atomic(Path(path), lambda t: Path(t).write_text(
        json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8"))


def atomic_write_text(text: str, path: str | Path) -> Path:
    return _atomic(Path(path), lambda t: Path(t).write_text(text, encoding="utf-8"))
