"""Exactly-once output: one Parquet part per chunk, committed by write-temp + fsync + rename.

A part either exists whole under its final name or not at all, so after a kill the
committed parts are exactly the finished chunks; the merge checks that the parts
cover rows 0..n-1 once each before ``predictions.parquet`` is renamed into place.

Each part's sha256 is committed in a sidecar (``part-NNNNN.parquet.sha256``) *before* the
part itself is renamed into place, so a kill at any point never leaves a committed part
without its checksum; a part damaged later (truncated, edited, a bad disk) fails
``verify_part`` and the resumed night recomputes it. So does a part whose columns differ from
``SCHEMA``: a night interrupted under an older version of the product and resumed after an
upgrade redoes the old parts instead of failing at the merge.

A part also keeps the validated reviewer-facing fields of its predicted rows (``ITEM_FIELDS``,
null on rejected rows), so the review queue is built from what the scoring pass read instead of
a second pass over the catalog; ``predictions.parquet`` takes only ``COLUMNS`` from the parts.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...io_utils import atomic_write, folder_syncs_at_end
from .manifest import file_sha256

PARTS = "parts"
PREDICTIONS = "predictions.parquet"
_PART = re.compile(r"^part-(\d+)\.parquet$")

# Fixed schema: a chunk where a column happens to be all-null must still merge with the rest.
SCHEMA = pa.schema([
    ("item_id", pa.string()), ("row", pa.int64()), ("status", pa.string()), ("reason", pa.string()),
    # status: accepted (full depth), accepted_partial (at an ancestor: its refinement is reviewed),
    # review or rejected. category/confidence: the deepest accepted node; model_category and
    # leaf_confidence: the leaf guess; accepted_depth 0 for review
    ("category", pa.string()), ("confidence", pa.float64()), ("model_category", pa.string()),
    ("leaf_confidence", pa.float64()), ("accepted_depth", pa.int64()),
    ("top1", pa.string()), ("top1_proba", pa.float64()),
    ("top2", pa.string()), ("top2_proba", pa.float64()),
    ("top3", pa.string()), ("top3_proba", pa.float64()),
    ("threshold", pa.float64()), ("rule_id", pa.string()), ("image_issue", pa.string()),
    ("model_name", pa.string()), ("model_version", pa.string()), ("model_run_id", pa.string()),
    ("run_id", pa.string()),
    # where the record is in the source file ("12" or "12-14"; None for Parquet) and, for a
    # record the reader found broken, a bounded copy of its raw text (catalog.csv_reader)
    ("lines", pa.string()), ("raw", pa.string()),
    # what decided a row not accepted at full depth (explain.add_reasons): text and JSON
    ("why", pa.string()), ("why_json", pa.string()),
])
COLUMNS = SCHEMA.names
# The item fields the review queue shows (review.queue.ITEM_COLUMNS), as validated, on predicted rows.
# Text as UTF-8 bytes with lone surrogates passed through: validation keeps some (an image name), and
# the queue must show exactly what was read.
ITEM_SCHEMA = pa.schema([
    ("title", pa.binary()), ("description", pa.binary()), ("specs", pa.binary()), ("brand", pa.binary()),
    ("image", pa.binary()),
    ("domain", pa.binary()), ("url", pa.binary()), ("price", pa.float64()),
])
ITEM_FIELDS = ITEM_SCHEMA.names
PART_SCHEMA = pa.schema(list(SCHEMA) + list(ITEM_SCHEMA))
PART_COLUMNS = PART_SCHEMA.names


def part_path(out_dir: Path, index: int) -> Path:
    return out_dir / PARTS / f"part-{index:05d}.parquet"


def committed_parts(out_dir: Path) -> dict[int, Path]:
    """Chunk index -> committed part file."""
    d = out_dir / PARTS
    if not d.is_dir():
        return {}
    found = {}
    for p in d.iterdir():
        m = _PART.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def remove_stale_temps(out_dir: Path) -> int:
    """Delete temp files a killed run left behind (only safe under the dir lock)."""
    n = 0
    for d in (out_dir, out_dir / PARTS):
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def to_table(frame: pd.DataFrame, items: pd.DataFrame | None = None) -> pa.Table:
    """A part's table: ``frame``'s rows (COLUMNS), then the ``ITEM_FIELDS`` of its predicted rows
    from ``items`` (the chunk's validated items, matched by ``row``); null on rejected rows."""
    frame = frame.reindex(columns=COLUMNS)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    items = (items if items is not None else pd.DataFrame()).reindex(columns=["row", *ITEM_FIELDS])
    pos = pd.Index(items["row"]).get_indexer(frame["row"].to_numpy()) if len(items) else np.full(len(frame), -1)
    pos[(frame["status"].astype(object) == "rejected").to_numpy()] = -1
    for f in ITEM_SCHEMA:
        values = items[f.name].to_numpy(dtype=object)[pos] if len(items) else np.full(len(frame), None)
        table = table.append_column(f, _array(values, f.type, pos < 0))
    return table


def _array(values: np.ndarray, kind: pa.DataType, mask: np.ndarray) -> pa.Array:
    if kind != pa.binary():
        return pa.array(values, type=kind, mask=mask, from_pandas=True)
    try:  # valid Unicode (nearly always): arrow's own UTF-8 bytes
        return pa.array(values, type=pa.string(), mask=mask, from_pandas=True).cast(pa.binary())
    except (UnicodeEncodeError, pa.ArrowException):
        values = [v.encode("utf-8", "surrogatepass") if isinstance(v, str) and not m else None
                  for v, m in zip(values, mask)]
        return pa.array(values, type=kind, mask=mask, from_pandas=True)


def _text(column: pa.ChunkedArray) -> list:
    try:  # valid UTF-8 (nearly always)
        return column.cast(pa.string()).to_pylist()
    except pa.ArrowException:
        return [None if v is None else v.decode("utf-8", "surrogatepass") for v in column.to_pylist()]


def checksum_path(part: Path) -> Path:
    return part.with_name(part.name + ".sha256")


def write_part(out_dir: Path, index: int, frame: pd.DataFrame, items: pd.DataFrame | None = None) -> Path:
    """Commit chunk ``index``'s output rows, with the item fields of its validated ``items``."""
    table = to_table(frame.sort_values("row", kind="stable"), items)
    path = part_path(out_dir, index)

    def write(tmp: str) -> None:
        pq.write_table(table, tmp)
        digest = file_sha256(Path(tmp))  # committed before the part: the rename below comes after
        atomic_write(checksum_path(path), lambda t: Path(t).write_text(digest + "\n", encoding="ascii"))

    # both renames, then one fsync of the parts folder: after a power cut the part is there with its
    # checksum, or not there, or there without one ("no checksum recorded": recomputed)
    with folder_syncs_at_end():
        return atomic_write(path, write)


def recorded_checksum(part: Path) -> str | None:
    try:
        return checksum_path(part).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def verify_part(part: Path) -> str | None:
    """None when the committed part is the file that was written, else why it is not."""
    recorded = recorded_checksum(part)
    if recorded is None:
        return "no checksum recorded"
    actual = file_sha256(part)
    if actual != recorded:
        return f"checksum mismatch (sha256 {actual[:12]}, committed {recorded[:12]}, {part.stat().st_size} bytes)"
    try:
        schema = pq.read_schema(part)
    except (OSError, pa.ArrowException) as e:
        return f"unreadable part ({e})"
    if not schema.equals(PART_SCHEMA, check_metadata=False):
        missing = [n for n in PART_COLUMNS if n not in schema.names]
        extra = [n for n in schema.names if n not in PART_COLUMNS]
        detail = "; ".join(x for x in (missing and f"missing {', '.join(missing)}",
                                        extra and f"unknown {', '.join(extra)}") if x) or "column types differ"
        return f"written with another part schema, by another version of the product ({detail})"
    return None


def part_checksums(out_dir: Path) -> dict[str, str | None]:
    """Part file name -> its committed sha256 (kept in the finished night's manifest)."""
    return {p.name: recorded_checksum(p) for p in committed_parts(out_dir).values()}


def drop_part(part: Path) -> None:
    """Remove a part that failed verification, and its checksum (only under the dir lock)."""
    part.unlink(missing_ok=True)
    checksum_path(part).unlink(missing_ok=True)


def read_part_ids(path: Path) -> pd.DataFrame:
    """item_id, row, status of a committed part (to rebuild the seen-id set on restart)."""
    return pq.read_table(path, columns=["item_id", "row", "status"]).to_pandas()


def read_part_items(out_dir: Path, n_chunks: int, full_rows, columns: list[str]):
    """Per part, in order: ``item_id``, ``row`` and ``title`` of its predicted rows, and the other
    item ``columns`` only for rows in ``full_rows`` (None elsewhere): only what the queue needs."""
    full = np.sort(np.asarray(full_rows, dtype=np.int64))
    other = [c for c in columns if c != "title"]
    for i in range(n_chunks):
        table = pq.read_table(part_path(out_dir, i), columns=["item_id", "row", "status", *columns],
                              schema=PART_SCHEMA)
        table = table.filter(pc.not_equal(table.column("status"), "rejected"))
        light = ~np.isin(table.column("row").to_numpy(), full)
        frame = table.select(["item_id", "row", *[c for c in columns if ITEM_SCHEMA.field(c).type != pa.binary()]]
                             ).to_pandas()
        for c in columns:
            if ITEM_SCHEMA.field(c).type == pa.binary():
                column = table.column(c)
                if c in other and light.any():
                    column = pc.if_else(pa.array(light), pa.scalar(None, pa.binary()), column)
                frame[c] = pd.Series(_text(column), index=frame.index, dtype=object)
        yield frame[["item_id", "row", *columns]]


def merge_parts(out_dir: Path, n_chunks: int, n_rows: int) -> Path:
    """Concatenate parts 0..n_chunks-1 into predictions.parquet, streaming one part at a time.

    Raises if a part is missing or the rows are not exactly 0..n_rows-1 in order.
    """
    parts = committed_parts(out_dir)
    missing = [i for i in range(n_chunks) if i not in parts]
    extra = [i for i in parts if i >= n_chunks]
    if missing or extra:
        raise RuntimeError(f"cannot merge {out_dir}: missing parts {missing[:10]}, unexpected parts {extra[:10]}")

    def write(tmp: str) -> None:
        expected = 0
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            for i in range(n_chunks):
                table = pq.read_table(parts[i], columns=COLUMNS, schema=PART_SCHEMA).select(COLUMNS)
                rows = table.column("row").to_numpy()
                if not np.array_equal(rows, np.arange(expected, expected + len(rows))):
                    raise RuntimeError(f"{parts[i]} holds rows {rows[:3].tolist()}..., expected from {expected}")
                expected += len(rows)
                writer.write_table(table)
        if expected != n_rows:
            raise RuntimeError(f"parts hold {expected} rows, the catalog has {n_rows}")

    return atomic_write(out_dir / PREDICTIONS, write)
