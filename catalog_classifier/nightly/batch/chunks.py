"""Stream a catalog as validated chunks and turn each chunk into output rows.

Every input row leaves a chunk exactly once: as a prediction (accepted, accepted_partial or review) or as a
rejection with its reason. Rejected are rows that cannot be identified (a broken record,
a missing or unusable item_id, or an id already kept earlier in the file, in this chunk or
any before it) and rows whose scoring fails on their own (score_items).
Everything else is predicted, including items with empty title and description: brand,
domain, price and the image still carry signal, and a weak item ends up below its
category's threshold and in review by itself. Image problems never reject a row: the
item is predicted from its text and ``image_issue`` says why the image was not used.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...catalog import (META_COLUMNS, CatalogError, adapt, choose_adapter, iter_table_chunks, strict_columns,
                       validate_items)
from ...catalog.cleaning import bounded_raw
from ...catalog.readers import table_format
from ...catalog.validate import LINES_COLUMN
from ...config import CatalogConfig
from .commit import COLUMNS

log = logging.getLogger(__name__)


@dataclass
class CatalogStream:
    path: Path
    cfg: CatalogConfig
    chunk_size: int
    adapter: str
    columns: list[str]  # raw columns of the first chunk
    # filled by each pass over the file: physical_lines, records (readers.iter_table_chunks)
    stats: dict = field(default_factory=dict)

    def chunks(self) -> Iterator[tuple[int, pd.DataFrame]]:
        """(chunk index, raw chunk); the index of a raw chunk is its row positions in the file."""
        chunks = iter_table_chunks(self.path, self.chunk_size, strict=strict_columns(self.cfg),
                                   stats=self.stats)
        for i, raw in enumerate(chunks):
            # JSON lines: a chunk where no record has some key must not lose the column
            absent = [c for c in self.columns if c not in raw.columns]
            for c in absent:
                raw[c] = pd.Series(None, index=raw.index, dtype=object)
            yield i, raw

    def estimate_chunks(self) -> int | None:
        """Number of chunks when the format says how many rows there are (Parquet), else None."""
        if table_format(self.path) != "parquet":
            return None
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(self.path).metadata.num_rows
        return max(1, -(-rows // self.chunk_size))

    def canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The chunk in the item schema (raw values, same index = file rows)."""
        return adapt(raw, self.adapter, self.cfg.columns, source=str(self.path))

    def validate(self, raw: pd.DataFrame, canonical: pd.DataFrame | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
        start = int(raw.index[0]) if len(raw) else 0
        canonical = self.canonical(raw) if canonical is None else canonical
        return validate_items(canonical, self.cfg, row_offset=start, meta=raw[list(META_COLUMNS)])


def open_catalog(path: str | Path, cfg: CatalogConfig, chunk_size: int) -> CatalogStream:
    """Check the file type, that it exists and the required columns, reading the first chunk only.

    Raises CatalogError naming the file or column; nothing has been written at that point.
    """
    path = Path(path)
    table_format(path)  # unknown suffix (.txt, .xlsx, ...) -> CatalogError naming the file
    if not path.is_file():
        raise CatalogError(f"catalog file {str(path)!r} not found (or not a regular file)")
    first = next(iter(iter_table_chunks(path, chunk_size, strict=strict_columns(cfg))), None)
    if first is None:
        first = pd.DataFrame()
    adapter = choose_adapter(first.columns, cfg)
    # missing required column -> CatalogError (the check is on the columns: no row is adapted twice)
    adapt(first.iloc[:0], adapter, cfg.columns, source=str(path))
    return CatalogStream(path, cfg, chunk_size, adapter, [str(c) for c in first.columns])


class SeenIds:
    """item_id -> row where it was first kept, across chunks (rebuilt from parts on restart).

    Holds one entry per distinct id (~100 bytes each): exact duplicate detection over the
    whole file needs it; everything else the job holds is bounded by the chunk size.
    """

    def __init__(self) -> None:
        self.first_row: dict[str, int] = {}

    def add_committed(self, part: pd.DataFrame) -> None:
        kept = part[part["status"] != "rejected"]
        for iid, row in zip(kept["item_id"].tolist(), kept["row"].tolist()):
            self.first_row.setdefault(iid, int(row))

    def split(self, items: pd.DataFrame, rejected: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Move items whose id was kept in an earlier chunk to the rejected rows; remember the rest."""
        dup = items["item_id"].map(lambda i: i in self.first_row).to_numpy(dtype=bool)
        if dup.any():
            d = items.loc[dup, ["item_id", "row", LINES_COLUMN]]
            moved = pd.DataFrame({
                "item_id": d["item_id"].to_numpy(), "row": d["row"].to_numpy(),
                LINES_COLUMN: d[LINES_COLUMN].to_numpy(), "raw": None,
                "reason": [f"duplicate item_id (first kept at row {self.first_row[i]})" for i in d["item_id"]],
            })
            rejected = pd.concat([rejected, moved], ignore_index=True) if len(rejected) else moved
            items = items.loc[~dup].reset_index(drop=True)
        for iid, row in zip(items["item_id"].tolist(), items["row"].tolist()):
            self.first_row[iid] = int(row)
        return items, rejected


REASON_CHARS = 300  # bound on a stage-failure reason (the exception text can be anything)


def failure_reason(exc: BaseException) -> str:
    """``featurize failed: UnicodeEncodeError: ...``: the stage and the error class, one bounded line."""
    from ...classifier import StageError

    text = str(exc) if isinstance(exc, StageError) else f"predict failed: {type(exc).__name__}: {exc}"
    return bounded_raw(" ".join(text.split()), REASON_CHARS)


def score_items(clf, items: pd.DataFrame, image_root: str | None, embeddings=None,
                image_reasons: list | None = None) -> pd.DataFrame:
    """Predictions for validated items (with their ``row`` and ``lines``), in the items' order.

    The whole batch is scored at once; when that fails it is scored again in halves, down
    to single rows, so the good rows are still scored in batches and only a row that fails
    on its own becomes a ``rejected`` row naming the stage and error class. Both engines
    score through here. ``embeddings``/``image_reasons``: computed elsewhere (Ray's CNN actors).
    """
    def score(lo: int, hi: int) -> list[pd.DataFrame]:
        part = items.iloc[lo:hi].reset_index(drop=True)
        lines = part[LINES_COLUMN].to_numpy() if LINES_COLUMN in part else None
        try:
            pred = clf.predict(part, image_root=image_root, progress=False,
                               embeddings=None if embeddings is None else embeddings[lo:hi],
                               image_reasons=None if image_reasons is None else image_reasons[lo:hi])
        except Exception as e:  # noqa: BLE001 - one row's failure must not stop the night
            if hi - lo > 1:
                mid = (lo + hi) // 2
                return score(lo, mid) + score(mid, hi)
            reason = failure_reason(e)
            log.warning("row %s rejected: %s", part["row"].iloc[0], reason)
            return [pd.DataFrame({"item_id": part["item_id"].to_numpy(), "status": "rejected",
                                  "reason": reason, "row": part["row"].to_numpy(), LINES_COLUMN: lines})]
        pred["row"] = part["row"].to_numpy()
        pred[LINES_COLUMN] = lines
        return [pred]

    frames = score(0, len(items))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def chunk_rows(clf, items: pd.DataFrame, rejected: pd.DataFrame, image_root: str | None,
               stamp: dict[str, str | None]) -> pd.DataFrame:
    """Output rows (commit.COLUMNS) of one chunk, ordered by file row."""
    pred = score_items(clf, items, image_root) if len(items) else None
    return assemble_rows(pred, rejected, stamp)


def assemble_rows(pred: pd.DataFrame | None, rejected: pd.DataFrame,
                  stamp: dict[str, str | None]) -> pd.DataFrame:
    """A chunk's predicted rows (with their ``row``) and rejected rows as one part, ordered by row.

    Shared by both engines, so a part does not depend on where its predictions were made.
    """
    frames = [f for f in (pred, rejected.assign(status="rejected") if len(rejected) else None)
              if f is not None and len(f)]
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (
        frames[0] if frames else pd.DataFrame(columns=["item_id", "row", "status"]))
    for k, v in stamp.items():
        out[k] = v
    return out.reindex(columns=COLUMNS).sort_values("row", kind="stable").reset_index(drop=True)
