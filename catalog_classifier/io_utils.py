"""Atomic writes (a reader never sees a half-written file), file locks and spreadsheet-safe CSV cells."""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read now."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stat_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised per (real path, size, mtime): for files that identify
    something (model files, backbone weights) and are read again and again, never for checking
    a file against damage (``file_sha256``)."""
    st = os.stat(path)
    return _stat_sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _stat_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def folder_sha256s(folder: str | Path) -> list[tuple[str, str]]:
    """(path relative to ``folder`` in POSIX form, ``stat_sha256``) of every file below it, in
    path order: the content identity of a saved model or a part of one."""
    folder = Path(folder)
    return [(f.relative_to(folder).as_posix(), stat_sha256(f)) for f in sorted(folder.rglob("*")) if f.is_file()]


_UMASK = os.umask(0o022)
os.umask(_UMASK)


_pending = threading.local()  # folders whose fsync a ``folder_syncs_at_end`` block holds back


@contextmanager
def folder_syncs_at_end():
    """Within the block, ``atomic_write`` still fsyncs every file before its rename, but each folder
    it renamed into is fsynced once, when the block ends (also on an error): several files of one
    folder (a part and its checksum, the review exports) cost one folder fsync, not one each.
    Renames stay in program order; a rename is durable once the block has ended. Nested blocks
    sync at the end of the outermost one."""
    outer = getattr(_pending, "dirs", None)
    if outer is not None:
        yield
        return
    _pending.dirs = dirs = {}
    try:
        yield
    finally:
        _pending.dirs = None
        for d in dirs:
            _fsync_dir(d)


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` then fsync, rename over ``path`` and fsync the folder (the rename is durable;
    inside ``folder_syncs_at_end``, at the end of that block).

    The one atomic write: every output file of the project goes through it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for other tools too
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirs = getattr(_pending, "dirs", None)
    if dirs is None:
        _fsync_dir(path.parent)
    else:
        dirs[path.parent] = None
    return path


class LockBusy(RuntimeError):
    """A non-blocking ``exclusive_lock`` found the lock held by another process."""


@contextmanager
def exclusive_lock(lock_path: str | Path, wait: bool = True):
    """flock on ``lock_path``; freed if the process dies. The lock file is kept: unlinking it
    would race with a waiter. ``wait=False`` raises LockBusy instead of waiting."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(str(lock_path)) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def file_lock(path: str | Path):
    """A blocking lock on ``<path>.lock``: read-modify-write steps on a shared file take turns."""
    path = Path(path)
    return exclusive_lock(path.with_name(path.name + ".lock"))


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
        return atomic_write(path, lambda t: safe.to_csv(t, index=False, lineterminator="\r\n"))
    return atomic_write(path, lambda t: df.to_parquet(t, index=False))


def atomic_write_json(obj, path: str | Path) -> Path:
    return atomic_write(path, lambda t: Path(t).write_text(
        json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8"))


def atomic_write_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda t: Path(t).write_text(text, encoding="utf-8"))
