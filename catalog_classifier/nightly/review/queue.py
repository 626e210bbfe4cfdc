"""The review queue: what people should look at tonight, most useful first.

Who is in it: rows in ``review`` (the model is not sure of any category), rows
``accepted_partial`` (accepted at an ancestor: the queue asks for the refinement, with the
``known_ancestor`` and the ``choices`` below it), and an audit sample of rows accepted at full depth.

Order, in short:
- model reviews by EXPECTED VALUE, highest first: the probability that the model's leaf guess
  is wrong (``p_wrong`` = 1 - leaf_confidence; for a partial row, the refinement's: 1 - the
  leaf's probability given the known ancestor, leaf_confidence / confidence) times the items
  one label settles (the item and its near-duplicates, by ``catalog.cleaning.title_key``,
  among tonight's predicted rows). Ties: smallest margin (top1 - top2) first;
- near-duplicates (same normalised title) are dealt round-robin: every group's best item comes
  before any group's second one, and two of a group never sit side by side;
- rule-forced reviews are a separate stream (same order) spread evenly through the model
  reviews, so one busy rule cannot fill the first page;
- an audit sample of auto-accepted items (chosen by a seeded hash of item_id, so the same
  items whatever the row order or chunking) is spread at regular intervals: the only way to
  measure production precision.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from ...catalog.cleaning import title_key
from ...catalog.schema import CATEGORY_SEP

AUDIT = "audit"
PARTIAL = "accepted_partial"
QUEUED = ("review", PARTIAL)  # statuses whose rows are reviewed (a partial row: its refinement)
ITEM_COLUMNS = ("title", "description", "specs", "brand", "image", "domain", "url", "price")
SPEC_CHARS = 600  # the attribute list a reviewer sees: its first lines, whole ones only
PASS_COLUMNS = ("rule_id", "image_issue", "model_name", "model_version", "run_id")
QUEUE_COLUMNS = (
    "priority", "item_id", "queue_reason", "title", "description", "specs", "brand", "image", "domain", "url",
    "price", "category", "confidence", "margin", "top1", "top1_proba", "top2", "top2_proba", "top3",
    "top3_proba", "status", "known_ancestor", "choices", "model_category", "leaf_confidence", "p_wrong",
    "expected_value", "why", "rule_id", "image_issue", "duplicates", "model_name", "model_version", "run_id",
    "why_json",
)


def at_or_below(label, ancestor) -> bool:
    """``label`` is ``ancestor`` or one of its descendants (" > " paths)."""
    return isinstance(label, str) and isinstance(ancestor, str) and (
        label == ancestor or label.startswith(ancestor + CATEGORY_SEP))


def allowed_labels(labels, ancestor: str) -> list[str]:
    """The taxonomy's labels equal to or below ``ancestor``, in taxonomy order."""
    return [l for l in labels if at_or_below(l, ancestor)]


def audit_sample(item_ids: pd.Series, rate: float, seed: int) -> pd.Series:
    """round(rate * n) item ids with the smallest seeded hashes, in hash order."""
    n = int(round(max(0.0, min(1.0, rate)) * len(item_ids)))
    if n == 0:
        return item_ids.iloc[:0]
    h = item_ids.astype(str).map(lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return item_ids.loc[h.sort_values(kind="stable").index[:n]]


def build_review_queue(predictions: pd.DataFrame, items: pd.DataFrame, audit_rate: float,
                       seed: int, description_chars: int = 300, labels: list[str] | None = None) -> pd.DataFrame:
    """Rows in review or accepted_partial, most useful first, plus the audit sample of accepted rows.

    ``labels``: the model's taxonomy (its ``labels_``), for a partial row's ``choices``; default the
    labels the predictions name."""
    pred = predictions.drop_duplicates("item_id").reset_index(drop=True)
    pred = _with_item_columns(pred, items, description_chars)
    pred["margin"] = _margin(pred)
    pred["_key"] = [title_key(t) or f"\0{i}" for i, t in zip(pred["item_id"], pred["title"])]
    pred["duplicates"] = pred.groupby("_key")["item_id"].transform("size").astype(int) - 1
    pred["p_wrong"] = p_wrong(pred)
    pred["expected_value"] = pred["p_wrong"] * (pred["duplicates"] + 1)

    review = pred[pred["status"].isin(QUEUED)]
    by_rule = review["reason"].astype(str).str.startswith("rule ") & review["reason"].notna()
    model_rows = _round_robin(review[~by_rule])
    rule_rows = _round_robin(review[by_rule])
    ordered = _interleave(model_rows, rule_rows)

    accepted = pred[pred["status"] == "accepted"]
    audit_ids = audit_sample(accepted["item_id"], audit_rate, seed)
    ordered = _interleave(ordered, list(audit_ids.index))
    queue = pred.loc[ordered].reset_index(drop=True)
    queue = _no_adjacent_duplicates(queue)

    partial = (queue["status"] == PARTIAL).to_numpy()
    queue["queue_reason"] = np.where(
        queue["status"] == "review", "review: " + queue["reason"].fillna("").astype(str),
        np.where(partial, "refine: accepted as " + queue["category"].astype(str), AUDIT))
    queue["known_ancestor"] = np.where(partial, queue["category"], None)
    taxonomy = list(labels) if labels is not None else _labels_in(predictions)
    queue["choices"] = [json.dumps(allowed_labels(taxonomy, a), ensure_ascii=False) if p else None
                        for a, p in zip(queue["category"], partial)]
    queue["priority"] = np.arange(1, len(queue) + 1)
    for c in QUEUE_COLUMNS:
        if c not in queue:
            queue[c] = None
    return queue[list(QUEUE_COLUMNS)].reset_index(drop=True)


def p_wrong(pred: pd.DataFrame) -> pd.Series:
    """Probability that the leaf guess is wrong; for a partial row given its accepted ancestor."""
    conf = pred["confidence"].astype(float)
    leaf = pred["top1_proba"].astype(float).fillna(conf)
    if "leaf_confidence" in pred:
        leaf = pred["leaf_confidence"].astype(float).fillna(leaf)
    partial = pred["status"] == PARTIAL
    if partial.any():  # the likeliest leaf under the accepted node (the climb may accept another parent's)
        leaf = leaf.copy()
        leaf[partial] = [_leaf_under(r, r["category"]) for _, r in pred[partial].iterrows()]
    given = np.where(partial, leaf / conf.where(conf > 0, np.nan), leaf)
    return pd.Series(1.0 - np.nan_to_num(given, nan=0.0), index=pred.index).clip(0.0, 1.0)


def _leaf_under(r: pd.Series, node) -> float:
    """Probability of the row's likeliest known leaf at or below ``node`` (leaf guess, then top-3)."""
    pairs = [("model_category", "leaf_confidence"), ("top1", "top1_proba"), ("top2", "top2_proba"),
             ("top3", "top3_proba")]
    for c, pc in pairs:
        v = r.get(c)
        if isinstance(v, str) and (v == node or v.startswith(f"{node}{CATEGORY_SEP}")) and pd.notna(r.get(pc)):
            return float(r[pc])
    return 0.0


def _labels_in(pred: pd.DataFrame) -> list[str]:
    cols = [c for c in ("model_category", "top1", "top2", "top3") if c in pred]
    return sorted({v for c in cols for v in pred[c].dropna().astype(str)})


def _with_item_columns(pred: pd.DataFrame, items: pd.DataFrame, description_chars: int) -> pd.DataFrame:
    cols = [c for c in ITEM_COLUMNS if c in items.columns]
    info = items[["item_id", *cols]].drop_duplicates("item_id")
    pred = pred.drop(columns=[c for c in cols if c in pred.columns]).merge(info, on="item_id", how="left")
    for c in ITEM_COLUMNS:
        if c not in pred:
            pred[c] = None
    pred["description"] = pred["description"].map(lambda d: _truncate(d, description_chars))
    pred["specs"] = pred["specs"].map(lambda d: _first_lines(d, SPEC_CHARS))
    for c in ("top1", "top2", "top3", "reason", *PASS_COLUMNS):
        if c not in pred:
            pred[c] = None
    for c in ("top1_proba", "top2_proba", "top3_proba"):
        if c not in pred:
            pred[c] = np.nan
    return pred


def _truncate(text, n: int):
    if not isinstance(text, str):
        return text
    return text if len(text) <= n else text[: max(0, n - 1)].rstrip() + "…"


def _first_lines(text, n: int):
    """The whole lines of ``text`` that fit in ``n`` characters (the first line cut if it alone
    does not), "…" on a line of its own when some were left out."""
    if not isinstance(text, str) or len(text) <= n:
        return text
    head = text[:n].rpartition("\n")[0] or text[: max(0, n - 1)]
    return head.rstrip() + "\n…"


def _margin(pred: pd.DataFrame) -> pd.Series:
    top1 = pred["top1_proba"].astype(float).fillna(pred["confidence"].astype(float))
    return (top1 - pred["top2_proba"].astype(float).fillna(0.0)).clip(lower=0.0)


def _round_robin(rows: pd.DataFrame) -> list:
    """Row labels ordered by (rank within duplicate group, expected value (highest first), margin,
    confidence, item_id)."""
    if rows.empty:
        return []
    r = rows.assign(_ev=-rows["expected_value"]).sort_values(["_ev", "margin", "confidence", "item_id"],
                                                             kind="stable")
    rank = r.groupby("_key").cumcount()
    order = pd.DataFrame({"rank": rank.to_numpy(), "pos": np.arange(len(r))}, index=r.index)
    return list(order.sort_values(["rank", "pos"], kind="stable").index)


def _interleave(main: list, extra: list) -> list:
    """Spread ``extra`` evenly through ``main``: extra k sits at slot int((k + 0.5) * total / len(extra))."""
    if not extra:
        return list(main)
    total = len(main) + len(extra)
    slots = {int((k + 0.5) * total / len(extra)) for k in range(len(extra))}
    mi, ei = iter(main), iter(extra)
    return [next(ei) if pos in slots else next(mi) for pos in range(total)]


def _no_adjacent_duplicates(queue: pd.DataFrame) -> pd.DataFrame:
    """Greedy repair: when two neighbours share a title key, pull the next different row forward."""
    keys = queue["_key"].tolist()
    order = list(range(len(queue)))
    for i in range(1, len(order)):
        if keys[order[i]] != keys[order[i - 1]]:
            continue
        for j in range(i + 1, len(order)):
            if keys[order[j]] != keys[order[i - 1]]:
                order.insert(i, order.pop(j))
                break
    return queue.iloc[order].drop(columns="_key").reset_index(drop=True)
