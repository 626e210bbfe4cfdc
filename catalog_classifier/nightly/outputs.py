"""End of a night: the review queue and its exports (nightly.queue / nightly.exports).

The item text is not kept while predicting (memory stays bounded by the chunk), so the
catalog is streamed a second time here. Only what the queue needs is kept: the title of
every predicted row (near-duplicate counts) and the full reviewer-facing fields of the
rows that can enter the queue (review rows and the audit sample).
"""
from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Config

log = logging.getLogger(__name__)
REVIEW_DIR = "review"
_OPTIONAL_MODULES = ("catalog_classifier.nightly.queue", "catalog_classifier.nightly.exports")


def build_queue(pred: pd.DataFrame, stream, out_dir: Path, cfg: Config, clf=None,
                created_at: str | None = None) -> dict[str, Any]:
    """Build and export tonight's review queue; returns a summary for the report."""
    try:
        from .exports import export_review_queue
        from .queue import ITEM_COLUMNS, audit_sample, build_review_queue
    except ModuleNotFoundError as e:  # pragma: no cover - only while the queue module is missing
        if e.name not in _OPTIONAL_MODULES:
            raise
        log.warning("review queue not built: %s is missing", e.name)
        return {"error": f"review queue not built: module {e.name} is missing"}
    n = cfg.nightly
    live = pred[pred["status"].astype(object) != "rejected"].reset_index(drop=True)
    accepted = live[live["status"].astype(object) == "accepted"]
    audit_ids = set(audit_sample(accepted["item_id"], n.audit_rate, n.audit_seed).tolist())
    wanted = live["status"].astype(object).eq("review") | live["item_id"].isin(audit_ids)
    items = _queue_items(stream, set(live["row"].tolist()), set(live.loc[wanted, "row"].tolist()),
                         list(ITEM_COLUMNS))
    queue = build_review_queue(live, items, n.audit_rate, n.audit_seed)
    stamp = dt.datetime.fromisoformat(created_at) if created_at else None
    files = export_review_queue(queue, out_dir / REVIEW_DIR, cfg.catalog.image_root,
                                categories=list(clf.labels_) if clf is not None else None,
                                created_at=stamp)
    reasons = queue["queue_reason"].astype(object)
    return {"items": int(len(queue)), "review": int((reasons != "audit").sum()),
            "audit": int((reasons == "audit").sum()), "audit_rate": n.audit_rate,
            "files": {k: str(Path(p).relative_to(out_dir)) for k, p in files.items()}}


def _queue_items(stream, live_rows: set[int], full_rows: set[int], columns: list[str]) -> pd.DataFrame:
    """Item fields from a second pass over the catalog: title for ``live_rows``, all
    ``columns`` for ``full_rows`` (a subset of them)."""
    frames = []
    for _, raw in stream.chunks():
        items, _ = stream.validate(raw)
        items = items[items["row"].isin(live_rows)]
        full = items["row"].isin(full_rows).to_numpy()
        part = items[["item_id", *columns]].copy()
        for c in columns:
            if c != "title":
                part.loc[~full, c] = None
        frames.append(part)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["item_id", *columns])
