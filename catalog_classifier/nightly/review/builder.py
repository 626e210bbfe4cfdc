"""End of a night: the review queue and its exports (review.queue / review.exports).

The item text is not kept while predicting (memory stays bounded by the chunk): each committed
part keeps its predicted rows' validated item fields (batch.commit), read back here part by part
instead of a second pass over the catalog. Only what the queue needs is kept: the
title of every predicted row (near-duplicate counts) and the full reviewer-facing fields of the
rows that can enter the queue (review rows and the audit sample).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from ...config import Config
from ..batch.commit import read_part_items
from .exports import export_review_queue
from .queue import AUDIT, ITEM_COLUMNS, QUEUED, audit_sample, build_review_queue

REVIEW_DIR = "review"


def build_queue(pred: pd.DataFrame, n_chunks: int, out_dir: Path, cfg: Config, clf=None,
                created_at: str | None = None) -> dict[str, Any]:
    """Build and export tonight's review queue from the night's ``n_chunks`` committed parts and
    the item fields they keep; returns a summary for the report."""
    n = cfg.nightly
    live = pred[pred["status"].astype(object) != "rejected"].reset_index(drop=True)
    accepted = live[live["status"].astype(object) == "accepted"]
    audit_ids = set(audit_sample(accepted["item_id"], n.audit_rate, n.audit_seed).tolist())
    wanted = live["status"].astype(object).isin(QUEUED) | live["item_id"].isin(audit_ids)
    items = _queue_items(out_dir, n_chunks, live.loc[wanted, "row"].to_numpy(), list(ITEM_COLUMNS))
    labels = list(clf.labels_) if clf is not None else None
    queue = build_review_queue(live, items, n.audit_rate, n.audit_seed, labels=labels)
    stamp = dt.datetime.fromisoformat(created_at) if created_at else None
    res = export_review_queue(queue, out_dir / REVIEW_DIR, cfg.catalog.image_root,
                              categories=labels,
                              created_at=stamp, settings=cfg.review_export)
    reasons, status = queue["queue_reason"].astype(object), queue["status"].astype(object)
    return {"items": int(len(queue)), "review": int(((reasons != AUDIT) & (status == "review")).sum()),
            "partial": int((status == QUEUED[1]).sum()),
            "audit": int((reasons == AUDIT).sum()), "audit_rate": n.audit_rate,
            "image_tasks": res.image_tasks, "text_tasks": res.text_tasks, "warnings": res.warnings,
            "files": {k: str(Path(p).relative_to(out_dir)) for k, p in res.paths.items()}}


def _queue_items(out_dir: Path, n_chunks: int, full_rows, columns: list[str]) -> pd.DataFrame:
    """Item fields of the predicted rows from the committed parts: title for all of them, all
    ``columns`` for ``full_rows``."""
    frames = [f[["item_id", *columns]] for f in read_part_items(out_dir, n_chunks, full_rows, columns)]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["item_id", *columns])
