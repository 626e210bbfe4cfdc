"""Readers for the files reviewers send back: Ground Truth output manifest, Label Studio export, CSV.

Each reader returns one row per human label found: item_id, label, time (UTC, NaT when the
file does not say), annotator, origin (job / project name, for the store's ``source``),
known_ancestor (the category an ``accepted_partial`` item was already accepted at, as the
export wrote it; None otherwise), plus a count of records that carried no usable human label
(cancelled, machine-annotated, failed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...io_utils import unescape_cell
from .exports import CONTROL_NAME

COLUMNS = ["item_id", "label", "time", "annotator", "origin", "known_ancestor"]


class LabelImportError(ValueError):
    """The file cannot be read as labels; the message says what is wrong and where."""


@dataclass
class ParsedLabels:
    format: str
    rows: pd.DataFrame
    unlabeled: int = 0
    problems: list[str] = field(default_factory=list)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".manifest", ".output"):
        return "groundtruth"
    head = path.read_text(encoding="utf-8", errors="replace")[:4096].lstrip()
    if head.startswith("["):
        return "labelstudio"
    if head.startswith("{"):
        return "groundtruth"
    raise LabelImportError(f"{path}: not a Ground Truth manifest (JSON lines), a Label Studio JSON "
                           "export or a CSV with item_id,category columns")


def read_label_file(path: str | Path, fmt: str | None = None,
                    label_attribute: str | None = None) -> ParsedLabels:
    path = Path(path)
    if not path.exists():
        raise LabelImportError(f"label file not found: {path}")
    fmt = fmt or detect_format(path)
    readers = {"groundtruth": lambda: read_groundtruth(path, label_attribute),
               "labelstudio": lambda: read_labelstudio(path), "csv": lambda: read_csv(path)}
    if fmt not in readers:
        raise LabelImportError(f"unknown label file format {fmt!r}; use one of {sorted(readers)}")
    return readers[fmt]()


def read_groundtruth(path: Path, label_attribute: str | None = None) -> ParsedLabels:
    """Output manifest: every ``X`` with an ``X-metadata`` object that says human-annotated "yes"."""
    rows, unlabeled, problems = [], 0, []
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as e:
                raise LabelImportError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            found = []
            for attr in line:
                meta = line.get(f"{attr}-metadata")
                if not isinstance(meta, dict) or (label_attribute and attr != label_attribute):
                    continue
                if meta.get("human-annotated") == "yes" and isinstance(meta.get("class-name"), str):
                    found.append((meta.get("creation-date") or "", meta["class-name"], meta.get("job-name")))
            if not found:
                unlabeled += 1
                continue
            if line.get("item_id") in (None, ""):
                problems.append(f"line {n}: no item_id")
                continue
            when, label, job = max(found, key=lambda t: t[0])
            rows.append((str(line["item_id"]), label, when or None, None, job, line.get("known_ancestor")))
    return ParsedLabels("groundtruth", _frame(rows), unlabeled, problems)


def read_labelstudio(path: Path) -> ParsedLabels:
    """JSON export: the latest annotation that was not cancelled; JSON-MIN exports work too."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LabelImportError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(tasks, dict):
        tasks = tasks.get("tasks", [tasks])
    rows, unlabeled, problems = [], 0, []
    for n, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise LabelImportError(f"{path}: task #{n} is not a JSON object")
        data = task.get("data", task)
        item_id = data.get("item_id", task.get("item_id"))
        if "annotations" not in task and "completions" not in task:  # JSON-MIN: flat fields
            label = task.get(CONTROL_NAME)
            ok = isinstance(label, str) and label != ""
            if ok and item_id not in (None, ""):
                rows.append((str(item_id), label, task.get("updated_at") or task.get("created_at"),
                             _annotator(task.get("annotator")), "labelstudio", task.get("known_ancestor")))
            elif ok:
                problems.append(f"task #{n}: no item_id in data")
            else:
                unlabeled += 1
            continue
        best = None
        for ann in task.get("annotations", task.get("completions")) or []:
            if ann.get("was_cancelled") or ann.get("skipped"):
                continue
            label = _choice(ann.get("result") or [])
            if label is None:
                continue
            when = ann.get("updated_at") or ann.get("created_at") or ""
            key = (when, ann.get("id") or 0)
            if best is None or key > best[0]:
                best = (key, label, ann)
        if best is None:
            unlabeled += 1
        elif item_id in (None, ""):
            problems.append(f"task #{n} (id {task.get('id')}): no item_id in data")
        else:
            _, label, ann = best
            rows.append((str(item_id), label, ann.get("updated_at") or ann.get("created_at"),
                         _annotator(ann.get("completed_by")), f"labelstudio:{task.get('project', '')}".rstrip(":"),
                         data.get("known_ancestor")))
    return ParsedLabels("labelstudio", _frame(rows), unlabeled, problems)


def read_csv(path: Path) -> ParsedLabels:
    """Columns item_id and category (or label); optional time and annotator.

    Cells the product escaped against formula injection (``'=...``) are read back as written."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if path.suffix == ".tsv" else ",")
    df = df.apply(lambda col: col.map(unescape_cell))
    cols = {c.strip().lower(): c for c in df.columns}
    label_col = cols.get("category", cols.get("label"))
    if "item_id" not in cols or label_col is None:
        raise LabelImportError(f"{path}: a label CSV needs columns item_id and category (or label); "
                               f"it has {list(df.columns)}")
    ids = df[cols["item_id"]]  # exactly as written: the id is the join key
    labels = df[label_col].str.strip()
    ok = (ids.str.strip() != "") & (labels != "")
    rows = pd.DataFrame({
        "item_id": ids[ok], "label": labels[ok],
        "time": df[cols["time"]][ok] if "time" in cols else None,
        "annotator": df[cols["annotator"]][ok] if "annotator" in cols else None,
        "origin": "csv",
        "known_ancestor": df[cols["known_ancestor"]][ok].replace("", None) if "known_ancestor" in cols else None,
    })
    return ParsedLabels("csv", _frame(rows), int((~ok).sum()))


def _choice(result: list) -> str | None:
    """The first choice of the ``category`` control (or of any choices control if it is the only one)."""
    choices = [r for r in result if r.get("type") == "choices" and r.get("value", {}).get("choices")]
    named = [r for r in choices if r.get("from_name") == CONTROL_NAME]
    pick = named or (choices if len({r.get("from_name") for r in choices}) == 1 else [])
    return pick[0]["value"]["choices"][0] if pick else None


def _annotator(who) -> str | None:
    if isinstance(who, dict):
        return who.get("email") or str(who.get("id"))
    return None if who is None else str(who)


def _frame(rows) -> pd.DataFrame:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=COLUMNS)
    df = df.reset_index(drop=True)
    df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce", format="ISO8601")
    for c in ("item_id", "label", "annotator", "origin", "known_ancestor"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df[COLUMNS]
