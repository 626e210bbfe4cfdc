"""Read catalog files (CSV/TSV, JSON lines, Parquet) into all-string tables.

Every cell comes back as ``str`` or ``None`` (object dtype): ids such as
``"00123"`` or 19-digit SKUs must never pass through float, and the empty string
means "missing" in every format, so the same rows read the same from any format.
The index is the 0-based row position in the file, also for streamed chunks.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import CatalogError

_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".zip"}
_FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}
_CSV_ENCODING = "utf-8-sig"  # tolerate the byte-order mark spreadsheet exports add


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


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a whole catalog file; cells are ``str`` or ``None``."""
    chunks = list(iter_table_chunks(path, chunksize=None))
    if len(chunks) == 1:
        return chunks[0]
    return pd.concat(chunks) if chunks else pd.DataFrame()


def iter_table_chunks(path: str | Path, chunksize: int | None) -> Iterator[pd.DataFrame]:
    """Stream a catalog file as DataFrames of at most ``chunksize`` rows (None = one chunk).

    Chunk indexes continue across chunks (row positions in the file). Read errors,
    including those met half-way through a stream, surface as CatalogError.
    """
    if chunksize is not None and chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    fmt = table_format(path)
    p = Path(path)
    if not p.is_file():
        raise CatalogError(f"catalog file {str(path)!r} not found (or not a regular file)")
    gen = {"csv": _csv_chunks, "tsv": _csv_chunks, "jsonl": _jsonl_chunks,
           "parquet": _parquet_chunks}[fmt]
    try:
        yield from gen(p, chunksize, fmt)
    except CatalogError:
        raise
    except UnicodeDecodeError as e:
        raise CatalogError(f"catalog file {str(path)!r} is not valid UTF-8 text: {e}") from e
    except (OSError, ValueError, TypeError, ImportError) as e:
        # pandas ParserError/EmptyDataError, json.JSONDecodeError, pyarrow.ArrowInvalid
        # are all ValueError subclasses; OSError covers I/O and pyarrow's IOError.
        raise CatalogError(
            f"cannot read catalog file {str(path)!r} as {fmt}: {type(e).__name__}: {e}") from e


def _csv_chunks(p: Path, chunksize: int | None, fmt: str) -> Iterator[pd.DataFrame]:
    reader = pd.read_csv(p, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False,
                         na_filter=False, encoding=_CSV_ENCODING, chunksize=chunksize)
    if chunksize is None:
        yield _as_strings(reader, start=0)
        return
    start = 0
    with reader:
        for chunk in reader:
            yield _as_strings(chunk, start)
            start += len(chunk)


def _jsonl_chunks(p: Path, chunksize: int | None, fmt: str) -> Iterator[pd.DataFrame]:
    """JSON lines, parsed with the json module.

    pandas' JSON reader turns an integer column with any null into float64
    (``123`` -> ``"123.0"``) and loses precision above 2**53; json keeps Python ints.
    A ``.json`` file holding one top-level array is accepted too (read in one go).
    """
    with _open_text(p) as fh:
        head = _first_char(fh)
        if head == "[":
            records = json.load(fh)
            if not isinstance(records, list):
                raise CatalogError(f"catalog file {str(p)!r}: expected an array of objects")
            step = chunksize or max(len(records), 1)
            for i in range(0, max(len(records), 1), step):
                yield _records_frame(records[i:i + step], i, p, 1)
            return
        batch: list[dict[str, Any]] = []
        start = 0
        first_line = 1
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CatalogError(f"catalog file {str(p)!r}, line {lineno}: invalid JSON: {e}") from e
            if not batch:
                first_line = lineno
            batch.append(rec)
            if chunksize is not None and len(batch) >= chunksize:
                yield _records_frame(batch, start, p, first_line)
                start += len(batch)
                batch = []
        if batch or start == 0:
            yield _records_frame(batch, start, p, first_line)


def _parquet_chunks(p: Path, chunksize: int | None, fmt: str) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(p)
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


def _open_text(p: Path):
    import bz2
    import gzip
    import lzma

    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    opener = openers.get(p.suffix.lower())
    if opener is not None:
        return opener(p, "rt", encoding="utf-8-sig")
    if p.suffix.lower() in _COMPRESSION_SUFFIXES:
        raise CatalogError(f"catalog file {str(p)!r}: {p.suffix} is not supported for JSON lines")
    return open(p, encoding="utf-8-sig")


def _first_char(fh) -> str:
    """Peek the first non-blank character without consuming the stream's lines."""
    pos = fh.tell()
    while True:
        ch = fh.read(1)
        if not ch or not ch.isspace():
            fh.seek(pos)
            return ch


def _records_frame(records: list, start: int, p: Path, first_line: int) -> pd.DataFrame:
    for k, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise CatalogError(f"catalog file {str(p)!r}, record {start + k} (near line "
                               f"{first_line}): expected a JSON object, got {type(rec).__name__}")
    columns: dict[str, None] = {}
    for rec in records:
        columns.update(dict.fromkeys(rec))
    data = {c: [_cell(rec.get(c)) for rec in records] for c in columns}
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
    return out
