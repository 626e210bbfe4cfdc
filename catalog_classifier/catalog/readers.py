"""Read catalog files (CSV/TSV, JSON lines, Parquet) into all-string tables.

Every cell comes back as ``str`` or ``None`` (object dtype): ids such as
``"00123"`` or 19-digit SKUs must never pass through float, and the empty string
means "missing" in every format, so the same rows read the same from any format.
The index is the 0-based row position in the file, also for streamed chunks.

No record is lost and none stops the read: CSV/TSV are parsed permissively (csv_reader.py)
and a JSON line that is not a JSON object becomes a row too. Every chunk carries the
reserved columns csv_reader.META_COLUMNS: the record's physical lines ("12" or "12-14"),
and for a broken record the error and a bounded copy of its raw text (its fields are None).
Text is decoded as UTF-8 with undecodable bytes kept as lone surrogates, so one bad byte
is one row's problem (cleaning turns them into U+FFFD, an id holding one is rejected).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from .cleaning import bounded_raw
from .csv_reader import ERROR, LINES, META_COLUMNS, RAW, CsvRecords, StrictColumns
from .errors import CatalogError

_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".zip"}
_FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}


def table_format(path: str | Path) -> str:
    """Return "csv", "tsv", "jsonl" or "parquet" from the file name (compression suffix allowed)."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise CatalogError(
            f"catalog file {str(path)!r}: unknown file type {p.suffix!r}; expected one of "
            f"{', '.join(sorted(_FORMATS))} (optionally compressed for CSV/JSON lines)")
    if fmt == "parquet" and p.suffix.lower() in _COMPRESSION_SUFFIXES:
        raise CatalogError(f"catalog file {str(path)!r}: Parquet files cannot be wrapped in "
                           f"{p.suffix}; Parquet compresses internally")
    return fmt


def read_table(path: str | Path, strict: StrictColumns = None) -> pd.DataFrame:
    """Read a whole catalog file; cells are ``str`` or ``None``."""
    chunks = list(iter_table_chunks(path, chunksize=None, strict=strict))
    if len(chunks) == 1:
        return chunks[0]
    return pd.concat(chunks) if chunks else pd.DataFrame()


def iter_table_chunks(path: str | Path, chunksize: int | None, strict: StrictColumns = None,
                      stats: dict | None = None) -> Iterator[pd.DataFrame]:
    """Stream a catalog file as DataFrames of at most ``chunksize`` rows (None = one chunk).

    Chunk indexes continue across chunks (row positions in the file). Errors that concern
    the whole file (missing, not a table, unreadable) surface as CatalogError, also when
    met half-way through a stream. ``strict(header)`` names the CSV columns where a line
    break means a broken record (adapters.structural_columns). ``stats`` is filled with
    ``physical_lines`` (None for Parquet) and ``records`` as the stream goes.
    """
    if chunksize is not None and chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    fmt = table_format(path)
    p = Path(path)
    if not p.is_file():
        raise CatalogError(f"catalog file {str(path)!r} not found (or not a regular file)")
    gen = {"csv": _csv_chunks, "tsv": _csv_chunks, "jsonl": _jsonl_chunks,
           "parquet": _parquet_chunks}[fmt]
    stats = {} if stats is None else stats
    stats.update(physical_lines=None if fmt == "parquet" else 0, records=0)
    try:
        yield from gen(p, chunksize, fmt, strict, stats)
    except CatalogError:
        raise
    except UnicodeDecodeError as e:
        raise CatalogError(f"catalog file {str(path)!r} is not valid UTF-8 text: {e}") from e
    except (OSError, ValueError, TypeError, ImportError) as e:
        # pandas ParserError/EmptyDataError, json.JSONDecodeError, pyarrow.ArrowInvalid
        # are all ValueError subclasses; OSError covers I/O and pyarrow's IOError.
        raise CatalogError(
            f"cannot read catalog file {str(path)!r} as {fmt}: {type(e).__name__}: {e}") from e


def _csv_chunks(p: Path, chunksize: int | None, fmt: str, strict: StrictColumns,
                stats: dict) -> Iterator[pd.DataFrame]:
    with _open_text(p, newline="") as fh:
        recs = CsvRecords(fh, "\t" if fmt == "tsv" else ",", strict)
        if not recs.header:
            raise CatalogError(f"catalog file {str(p)!r} is empty (no header line)")
        names, blank = recs.header + list(META_COLUMNS), [None] * len(recs.header)
        batch: list[list] = []
        start = 0
        for fields, lines, error, raw in recs:
            batch.append((blank if fields is None else fields) + [lines, error, raw])
            if chunksize is not None and len(batch) >= chunksize:
                stats.update(physical_lines=recs.lines_read, records=recs.records)
                yield _rows_frame(batch, names, start)
                start += len(batch)
                batch = []
        stats.update(physical_lines=recs.lines_read, records=recs.records)
        if batch or start == 0:
            yield _rows_frame(batch, names, start)


def _rows_frame(rows: list[list], names: list[str], start: int) -> pd.DataFrame:
    index = pd.RangeIndex(start, start + len(rows))
    cols = zip(*rows) if rows else [()] * len(names)
    return pd.DataFrame({n: pd.Series([v if v else None for v in col], index=index, dtype=object)
                         for n, col in zip(names, cols)}, index=index)


def _jsonl_chunks(p: Path, chunksize: int | None, fmt: str, strict: StrictColumns,
                  stats: dict) -> Iterator[pd.DataFrame]:
    """JSON lines, parsed with the json module; a line that is not a JSON object is a broken row.

    pandas' JSON reader turns an integer column with any null into float64
    (``123`` -> ``"123.0"``) and loses precision above 2**53; json keeps Python ints.
    A ``.json`` file holding one top-level array is accepted too (read in one go).
    Lone surrogate escapes (``"\\ud83d"``) are valid JSON: read as they are, handled per item.
    """
    with _open_text(p) as fh:
        head = _first_char(fh)
        if head == "[":
            records = json.load(fh)
            if not isinstance(records, list):
                raise CatalogError(f"catalog file {str(p)!r}: expected an array of objects")
            stats.update(physical_lines=None, records=len(records))
            step = chunksize or max(len(records), 1)
            for i in range(0, max(len(records), 1), step):
                yield _records_frame([(r, None) for r in records[i:i + step]], i)
            return
        batch: list[tuple[Any, str]] = []
        start = lineno = 0
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                rec = _Broken(f"invalid JSON: {e} (line {lineno})", line)
            batch.append((rec, str(lineno)))
            if chunksize is not None and len(batch) >= chunksize:
                stats.update(physical_lines=lineno, records=start + len(batch))
                yield _records_frame(batch, start)
                start += len(batch)
                batch = []
        stats.update(physical_lines=lineno, records=start + len(batch))
        if batch or start == 0:
            yield _records_frame(batch, start)


class _Broken:
    def __init__(self, error: str, raw: str):
        self.error, self.raw = error, raw


def _parquet_chunks(p: Path, chunksize: int | None, fmt: str, strict: StrictColumns,
                    stats: dict) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(p)
    stats["records"] = pf.metadata.num_rows
    if chunksize is None:
        yield _arrow_to_strings(pf.read(), 0)
        return
    start = 0
    for batch in pf.iter_batches(batch_size=chunksize):
        yield _arrow_to_strings(pa.Table.from_batches([batch]), start)
        start += batch.num_rows
    if start == 0:
        yield _arrow_to_strings(pf.schema_arrow.empty_table(), 0)


def _arrow_to_strings(table, start: int) -> pd.DataFrame:
    # integer_object_nulls keeps int columns with nulls as Python ints (no "123.0")
    return _as_strings(table.to_pandas(integer_object_nulls=True), start)


def _open_text(p: Path, newline: str | None = None):
    """The file as text: UTF-8 (a byte-order mark tolerated), bad bytes as lone surrogates."""
    import bz2
    import gzip
    import lzma

    kw = {"encoding": "utf-8-sig", "errors": "surrogateescape", "newline": newline}
    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    opener = openers.get(p.suffix.lower())
    if opener is not None:
        return opener(p, "rt", **kw)
    if p.suffix.lower() in _COMPRESSION_SUFFIXES:
        raise CatalogError(f"catalog file {str(p)!r}: {p.suffix} is not supported "
                           f"(use .gz, .bz2 or .xz)")
    return open(p, **kw)


def _first_char(fh) -> str:
    """Peek the first non-blank character without consuming the stream's lines."""
    pos = fh.tell()
    while True:
        ch = fh.read(1)
        if not ch or not ch.isspace():
            fh.seek(pos)
            return ch


def _records_frame(records: list[tuple[Any, str | None]], start: int) -> pd.DataFrame:
    """(record, lines) pairs as a frame; a record that is not an object gives a broken row."""
    columns: dict[str, None] = {}
    meta = []
    for rec, lines in records:
        if isinstance(rec, dict):
            columns.update(dict.fromkeys(rec))
            meta.append((lines, None, None))
        elif isinstance(rec, _Broken):
            meta.append((lines, rec.error, bounded_raw(rec.raw.rstrip("\r\n"))))
        else:
            where = f" (line {lines})" if lines else f" (record {start + len(meta)})"
            meta.append((lines, f"expected a JSON object, got {type(rec).__name__}{where}",
                         bounded_raw(json.dumps(rec, ensure_ascii=False))))
    columns.pop(LINES, None), columns.pop(ERROR, None), columns.pop(RAW, None)
    data = {c: [_cell(rec.get(c)) if isinstance(rec, dict) else None for rec, _ in records]
            for c in columns}
    for k, name in enumerate(META_COLUMNS):
        data[name] = [m[k] for m in meta]
    index = pd.RangeIndex(start, start + len(records))
    return pd.DataFrame({c: pd.Series(v, index=index, dtype=object) for c, v in data.items()},
                        index=index)


def _cell(v: Any) -> str | None:
    """One value as a string; None/NaN/"" mean missing; nested values as JSON text."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, str):
        return v if v != "" else None
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, ensure_ascii=False, default=str)
    if hasattr(v, "tolist") and not isinstance(v, (int, float, bool)):  # numpy arrays/scalars
        return _cell(v.tolist())
    return str(v)


def _as_strings(df: pd.DataFrame, start: int) -> pd.DataFrame:
    index = pd.RangeIndex(start, start + len(df))
    cols = [pd.Series([_cell(v) for v in df.iloc[:, j].tolist()], index=index, dtype=object)
            for j in range(df.shape[1])]
    out = pd.concat(cols, axis=1) if cols else pd.DataFrame(index=index)
    out.columns = [str(c) for c in df.columns]
    for name in META_COLUMNS:  # Parquet: every record is whole; no physical lines
        out[name] = pd.Series([None] * len(index), index=index, dtype=object)
    return out
