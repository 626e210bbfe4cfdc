"""End of a night: the review queue and its exports (review.queue / review.exports).

The item text is not kept while predicting (memory stays bounded by the chunk), so the
catalog is streamed a second time here. Only what the queue needs is kept: the title of
every predicted row (near-duplicate counts) and the full reviewer-facing fields of the
rows that can enter the queue (review rows and the audit sample).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...config import Config
from .exports import export_review_queue
from .queue import AUDIT, ITEM_COLUMNS, QUEUED, audit_sample, build_review_queue

REVIEW_DIR = "review"


def build_queue(pred: pd.DataFrame, stream, out_dir: Path, cfg: Config, clf=None,
                created_at: str | None = None) -> dict[str, Any]:
    """Build and export tonight's review queue; returns a summary for the report."""
    n = cfg.nightly
    live = pred[pred["status"].astype(object) != "rejected"].reset_index(drop=True)
    accepted = live[live["status"].astype(object) == "accepted"]
    audit_ids = set(audit_sample(accepted["item_id"], n.audit_rate, n.audit_seed).tolist())
    wanted = live["status"].astype(object).isin(QUEUED) | live["item_id"].isin(audit_ids)
    items = _queue_items(stream, live["row"].to_numpy(), live.loc[wanted, "row"].to_numpy(), list(ITEM_COLUMNS))
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


def _queue_items(stream, live_rows, full_rows, columns: list[str]) -> pd.DataFrame:
    """Item fields from a second pass over the catalog: title for ``live_rows``, all
    ``columns`` for ``full_rows`` (a subset of them)."""
    live_rows = np.sort(np.asarray(live_rows, dtype=np.int64))
    full_rows = np.sort(np.asarray(full_rows, dtype=np.int64))
    frames = []
    for _, raw in stream.chunks():
        lo, hi = (int(raw.index[0]), int(raw.index[-1])) if len(raw) else (0, -1)
        live, full = _within(live_rows, lo, hi), _within(full_rows, lo, hi)  # per chunk: no O(n) scans
        if not len(live):
            continue
        canonical = stream.canonical(raw)
        # only id and title are needed outside the queue: skip cleaning the long texts there
        light = ~canonical.index.isin(full)
        canonical.loc[light, [c for c in canonical.columns if c not in ("item_id", "title")]] = None
        items, _ = stream.validate(raw, canonical)
        items = items[items["row"].isin(live)]
        part = items[["item_id", *columns]].copy()
        frames.append(part)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["item_id", *columns])


def _within(sorted_rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
    a, b = np.searchsorted(sorted_rows, [lo, hi + 1])
    return sorted_rows[a:b]
