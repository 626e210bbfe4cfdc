"""The labeled store: reviewer labels kept in one Parquet file, read back for training and evaluation.

One row per (item_id, label, source, time); ``time`` is when the label was given (from the file,
else the import time) and ``imported_at`` when it reached the store. The store keeps history:
an item's label is its latest human label, so a later correction wins and nothing is lost.

Import rules: a label equal to the item's current label is a duplicate (ignored); a different
one is a conflict (stored, reported, latest wins); the "not for training" label is dropped;
labels outside the taxonomy reject the whole file unless ``allow_unknown`` (then only those rows).
A label for an ``accepted_partial`` item (the file says its ``known_ancestor``) refines it; one
outside that ancestor is kept (a person overrules the model) but listed in ``outside_ancestor``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ...io_utils import atomic_write_table
from .label_files import LabelImportError, read_label_file
from .queue import at_or_below
from ...io_utils import file_lock

STORE_COLUMNS = ["item_id", "label", "source", "time", "imported_at", "annotator", "file"]
_TS = "datetime64[us, UTC]"


@dataclass
class ImportReport:
    file: str
    format: str
    read: int = 0
    added: int = 0
    duplicates: int = 0
    not_for_training: int = 0
    unlabeled: int = 0
    conflicts: list[dict] = field(default_factory=list)
    unknown: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    refined: int = 0  # labels for partial items at or below their known ancestor
    outside_ancestor: list[dict] = field(default_factory=list)  # kept, flagged

    def summary(self) -> str:
        lines = [f"{self.file} ({self.format}): {self.read} labels read, {self.added} added, "
                 f"{self.duplicates} duplicates ignored, {self.not_for_training} marked not-for-training, "
                 f"{self.unlabeled} records without a human label"]
        if self.refined or self.outside_ancestor:
            lines.append(f"{self.refined + len(self.outside_ancestor)} label(s) refine items accepted at a parent "
                         f"category, {len(self.outside_ancestor)} of them outside it")
        for o in self.outside_ancestor:
            lines.append(f"outside the known ancestor {o['item_id']}: labeled {o['label']!r}, the model accepted "
                         f"{o['known_ancestor']!r} (kept)")
        for c in self.conflicts:
            lines.append(f"conflict {c['item_id']}: {c['previous']!r} ({c['previous_time']}) vs "
                         f"{c['new']!r} ({c['new_time']}) -> {c['kept']!r} kept (latest)")
        for label, ids in self.unknown.items():
            lines.append(f"rejected: {len(ids)} item(s) labeled {label!r}, not in the taxonomy")
        lines += [f"skipped {p}" for p in self.problems]
        return "\n".join(lines)


def unknown_labels_message(unknown: dict[str, list[str]], taxonomy: list[str]) -> str:
    names = ", ".join(f"{lab!r} ({len(ids)} item(s), e.g. {ids[0]})" for lab, ids in sorted(unknown.items()))
    return (f"labels not in the taxonomy: {names}. Known categories: {', '.join(map(repr, taxonomy))}. "
            "Fix the file (or pass the right --taxonomy); nothing was imported.")


def import_labels(path: str | Path, store: str | Path, taxonomy: list[str] | None, source: str | None = None,
                  not_for_training: str | None = "__skip__", label_attribute: str | None = None,
                  allow_unknown: bool = False, fmt: str | None = None, now: datetime | None = None) -> ImportReport:
    """Read one reviewer file into the store; raise LabelImportError on labels outside the taxonomy."""
    parsed = read_label_file(path, fmt, label_attribute)
    now = to_utc(now or datetime.now(timezone.utc))
    rep = ImportReport(str(path), parsed.format, len(parsed.rows), unlabeled=parsed.unlabeled,
                       problems=list(parsed.problems))
    new = parsed.rows.copy()
    skip = new["label"] == not_for_training if not_for_training else pd.Series(False, index=new.index)
    rep.not_for_training = int(skip.sum())
    new = new[~skip]
    if taxonomy is not None:
        bad = ~new["label"].isin(set(taxonomy))
        rep.unknown = {lab: sorted(g["item_id"].tolist()) for lab, g in new[bad].groupby("label")}
        if rep.unknown and not allow_unknown:
            raise LabelImportError(unknown_labels_message(rep.unknown, list(taxonomy)))
        new = new[~bad]
    partial = new["known_ancestor"].map(lambda a: isinstance(a, str) and a != "").to_numpy(dtype=bool)
    inside = [at_or_below(l, a) for l, a in zip(new["label"], new["known_ancestor"])]
    outside = partial & ~np.array(inside, dtype=bool)
    rep.refined = int((partial & ~outside).sum())
    rep.outside_ancestor = new.loc[outside, ["item_id", "label", "known_ancestor"]].to_dict(orient="records")
    new = new.assign(
        source=[source or o or parsed.format for o in new["origin"]],
        time=new["time"].astype(_TS).fillna(now), imported_at=now, file=Path(path).name,
    )
    new = _typed(new[STORE_COLUMNS])
    with file_lock(Path(store)):
        old = read_store(store)
        keep, rep.duplicates, rep.conflicts = _merge(old, new)
        rep.added = int(keep.sum())
        if rep.added:
            atomic_write_table(_typed(pd.concat([old, new[keep]], ignore_index=True)), store)
    return rep


def read_store(store: str | Path) -> pd.DataFrame:
    p = Path(store)
    if not p.exists():
        return _typed(pd.DataFrame(columns=STORE_COLUMNS))
    return _typed(pd.read_parquet(p))


def current_labels(store_df: pd.DataFrame) -> pd.DataFrame:
    """One row per item: its latest label (by time, then import time, then store order)."""
    df = store_df.reset_index(drop=True)
    df = df.assign(_pos=range(len(df))).sort_values(["time", "imported_at", "_pos"], kind="stable")
    return df.drop_duplicates("item_id", keep="last").drop(columns="_pos").reset_index(drop=True)


def labeled_items(store: str | Path | pd.DataFrame, catalog_items: pd.DataFrame,
                  since: datetime | pd.Timestamp | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Catalog rows that have a store label, and those labels (aligned, fresh index).

    ``since`` keeps only items whose current label reached the store after that moment
    (``imported_at``): what a model trained at ``since`` cannot have seen.
    """
    df = store if isinstance(store, pd.DataFrame) else read_store(store)
    cur = current_labels(df)
    if since is not None:
        cur = cur[cur["imported_at"] > to_utc(since)]
    items = catalog_items.drop_duplicates("item_id")
    joined = items.merge(cur[["item_id", "label"]], on="item_id", how="inner")
    labels = joined.pop("label").astype(object).rename("label")
    return joined.reset_index(drop=True), labels.reset_index(drop=True)


def load_taxonomy(path: str | Path) -> list[str]:
    """A JSON list, a model directory (its labels.json), or a text file with one category a line."""
    p = Path(path)
    if p.is_dir():
        p = p / "labels.json"
    if not p.exists():
        raise LabelImportError(f"taxonomy file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        data = json.loads(text)
        return [str(x) for x in (data["labels"] if isinstance(data, dict) else data)]
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _merge(old: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.Series, int, list[dict]]:
    """Walk the new rows in time order against each item's current label."""
    current = {r.item_id: (r.label, r.time) for r in current_labels(old).itertuples()}
    seen = set(zip(old["item_id"], old["label"], old["source"], old["time"]))
    keep = pd.Series(False, index=new.index)
    dups, conflicts = 0, []
    order = new.assign(_pos=range(len(new))).sort_values(["time", "_pos"], kind="stable")
    for idx, r in zip(order.index, order.itertuples()):
        prev = current.get(r.item_id)
        if (r.item_id, r.label, r.source, r.time) in seen or (prev is not None and prev[0] == r.label):
            dups += 1
            continue
        if prev is not None:
            kept = r.label if r.time >= prev[1] else prev[0]
            conflicts.append({"item_id": r.item_id, "previous": prev[0], "previous_time": str(prev[1]),
                              "new": r.label, "new_time": str(r.time), "kept": kept})
        keep[idx] = True
        seen.add((r.item_id, r.label, r.source, r.time))
        if prev is None or r.time >= prev[1]:
            current[r.item_id] = (r.label, r.time)
    return keep, dups, conflicts


def to_utc(ts) -> pd.Timestamp:
    """Naive times are taken as UTC."""
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reindex(columns=STORE_COLUMNS).reset_index(drop=True)
    for c in ("time", "imported_at"):
        df[c] = pd.to_datetime(df[c], utc=True).astype(_TS)
    for c in ("item_id", "label", "source", "annotator", "file"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df
