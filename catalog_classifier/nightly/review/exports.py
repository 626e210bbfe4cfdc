"""Review-queue exports for the labeling tools people actually use.

- ``review_queue.csv``: the queue as a table (text cells escaped against formula injection,
  ``io_utils.escape_cell``).
- ``review_queue.image.manifest.jsonl`` and ``review_queue.text.manifest.jsonl``: SageMaker Ground
  Truth input manifests, one per task type (a labeling job has one task type): image items by
  ``source-ref`` (``review_export.s3_prefix`` + the path under the image root; Ground Truth reads
  S3 objects only, so a local path is written with a warning), the others by ``source`` (the text).
  The model's guess rides along as a label attribute (``predicted-category``: class index) with
  its ``-metadata`` object, the layout Ground Truth writes, so ``labels import`` can tell it apart
  from human labels. Ground Truth offers no verification/adjustment job for classification: run
  a plain image or text classification job; the guess is context, not a pre-annotation.
- ``review_queue.gt_label_categories.json``: the job's label-category file
  (``{"document-version": "2018-11-28", "labels": [{"label": ...}, ...]}``).
- Partial items (``accepted_partial``: the category is known down to ``known_ancestor``) go to
  Ground Truth per parent, since a job has one label-category list: for each known ancestor a
  ``review_queue.partial-<slug>.gt_label_categories.json`` holding the labels at or below it and
  ``review_queue.partial-<slug>.{image,text}.manifest.jsonl`` (only the non-empty ones);
  ``review_queue.gt_parents.json`` maps each parent to its files. Every manifest line carries
  ``known_ancestor`` and ``why`` (the model's reasons) next to the other metadata keys.
- ``review_queue.labelstudio.json``: Label Studio tasks with ``predictions`` (pre-annotations,
  with ``model_version`` and ``score`` = the model confidence). Tasks are in queue order, so Label
  Studio's default order (task id) is the queue's; ``data.priority`` keeps it for sorting too.
  Images are referenced as ``review_export.labelstudio_images`` says (local-files URL, URL prefix
  or s3://); an item without a usable image gets a blank inline placeholder (no file reference)
  and ``data.has_image`` false: a text task in the same project.
- ``labelstudio_config.xml``: the matching labeling config: Choices "category" over Text "text" with
  DYNAMIC options (``value="$choices"``): each task's ``data.choices`` lists the labels it may get
  (the whole taxonomy; a partial item's: those at or below its ``known_ancestor``, which
  ``data.hint`` names and the pre-annotation (the model's leaf guess) already sits under);
  ``data.why`` shows the model's reasons.

An image is referenced only when the loader used it (no ``image_issue``) and it is a regular file
inside the image root; a refused or missing image (``/etc/passwd``, ``../``, ``file://``, a symlink
out of the root) is never written into any export. Every file is written atomically.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pandas as pd

from ...catalog.schema import CATEGORY_SEP
from ...config import ReviewExportConfig
from ...features.images import resolve_image_path
from ...io_utils import atomic_write_json, atomic_write_table, atomic_write_text, folder_syncs_at_end
from ...preflight import OperatorError
from .queue import PARTIAL, allowed_labels

log = logging.getLogger(__name__)
PREDICTION_ATTRIBUTE = "predicted-category"
CONTROL_NAME = "category"  # Label Studio <Choices name=...>; the import reads it back
TEXT_NAME = "text"
IMAGE_NAME = "image"
WHY_NAME, HINT_NAME, CHOICES_NAME = "why", "hint", "choices"  # Label Studio data fields
META_KEYS = ("item_id", "title", "brand", "domain", "url", "queue_reason", "priority", "top1", "top2",
             "top3", "rule_id", "known_ancestor", "why")
NO_WHY = "(accepted: audit sample)"
FULL_HINT = "Pick the product category"
LS_IMAGE_MODES = ("local-files", "url", "s3")
LOCAL_FILES_URL = "/data/local-files/?d="
# a 1x1 transparent GIF: what a text task shows in the Image slot (no file behind it)
BLANK_IMAGE = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
# Ground Truth input manifest limits: a line (JSON object) <= 100,000 characters, one attribute
# <= 20,000; the metadata values are kept far shorter so every line stays under the limit
GT_MAX_LINE_CHARS = 100_000
GT_MAX_ATTRIBUTE_CHARS = 20_000
_GT_META_CHARS = 2_000


class ExportSettingsError(OperatorError):
    """review_export settings that cannot produce a usable export."""


@dataclass
class ReviewExports:
    paths: dict[str, Path]
    image_tasks: int = 0
    text_tasks: int = 0
    warnings: list[str] = field(default_factory=list)


def check_settings(s: ReviewExportConfig) -> None:
    """Raise ExportSettingsError (one line) for review_export settings that cannot work."""
    if s.labelstudio_images not in LS_IMAGE_MODES:
        raise ExportSettingsError(f"review_export.labelstudio_images must be one of {', '.join(LS_IMAGE_MODES)}, "
                                  f"not {s.labelstudio_images!r}")
    if s.labelstudio_images == "url" and not s.url_prefix:
        raise ExportSettingsError("review_export.labelstudio_images is 'url' but review_export.url_prefix is not set")
    if s.labelstudio_images == "s3" and not s.s3_prefix:
        raise ExportSettingsError("review_export.labelstudio_images is 's3' but review_export.s3_prefix is not set")
    if s.s3_prefix and not s.s3_prefix.startswith("s3://"):
        raise ExportSettingsError(f"review_export.s3_prefix must start with s3://, not {s.s3_prefix!r}")


def export_review_queue(queue: pd.DataFrame, out_dir: str | Path, image_root: str | None = None, *,
                        categories: list[str] | None = None, model_version: str | None = None,
                        job_name: str = "catalog-classifier-review", created_at: datetime | None = None,
                        settings: ReviewExportConfig | None = None) -> ReviewExports:
    """Write the queue as CSV, Ground Truth manifests, Label Studio tasks + config.

    ``categories`` is the taxonomy (the model's ``labels_``): it fixes the Ground Truth class
    indices and the Label Studio choices. ``created_at`` (default: now) is stamped on every
    prediction; pass the night's own time to make reruns byte-identical.
    """
    s = settings or ReviewExportConfig()
    check_settings(s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cats = list(categories) if categories is not None else _categories_in(queue)
    stamp = (created_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    version = model_version or _model_version(queue)
    records = [_clean(r) for r in queue.to_dict(orient="records")]
    root = os.path.realpath(image_root or ".")
    images = [safe_image(r.get("image"), r.get("image_issue"), image_root, root) for r in records]
    allowed = [allowed_labels(cats, r["known_ancestor"]) if _partial(r) else cats for r in records]
    gt = [_gt_line(r, img, root, a, s.s3_prefix, job_name, stamp) for r, img, a in zip(records, images, allowed)]
    ls = [_ls_task(r, _ls_image(img, root, s), version, a) for r, img, a in zip(records, images, allowed)]
    res = ReviewExports({}, sum(i is not None for i in images), sum(i is None for i in images))
    if res.image_tasks and not s.s3_prefix:
        res.warnings.append(f"Ground Truth: {res.image_tasks} image reference(s) are local paths, not s3:// "
                            "(Ground Truth reads S3 objects only); set review_export.s3_prefix")
    lost = sum(img is not None and t["data"][IMAGE_NAME] == BLANK_IMAGE for img, t in zip(images, ls))
    if lost:
        res.warnings.append(f"Label Studio: {lost} image(s) are outside the local-files document root "
                            f"{_document_root(root, s)}; exported as text tasks")
    for w in res.warnings:
        log.warning("review export: %s", w)
    with folder_syncs_at_end():  # one fsync of the review folder for all its files
        res.paths = _write_all(out, queue, records, images, gt, ls, cats)
    return res


def _write_all(out: Path, queue: pd.DataFrame, records: list[dict], images: list, gt: list[dict],
               ls: list[dict], cats: list[str]) -> dict[str, Path]:
    return {
        "csv": atomic_write_table(queue.assign(image=[r.get("image") if i is not None else None
                                                       for r, i in zip(records, images)]),
                                  out / "review_queue.csv"),
        "groundtruth_image": atomic_write_text(_jsonl(line for line, i, r in zip(gt, images, records)
                                                      if i is not None and not _partial(r)),
                                               out / "review_queue.image.manifest.jsonl"),
        "groundtruth_text": atomic_write_text(_jsonl(line for line, i, r in zip(gt, images, records)
                                                     if i is None and not _partial(r)),
                                              out / "review_queue.text.manifest.jsonl"),
        "groundtruth_categories": atomic_write_json(
            {"document-version": "2018-11-28", "labels": [{"label": c} for c in cats]},
            out / "review_queue.gt_label_categories.json"),
        "labelstudio": atomic_write_json(ls, out / "review_queue.labelstudio.json"),
        "labelstudio_config": atomic_write_text(labelstudio_config(), out / "labelstudio_config.xml"),
        **_gt_per_parent(out, records, gt, images, cats),
    }


def _partial(r: dict) -> bool:
    return r.get("status") == PARTIAL and isinstance(r.get("known_ancestor"), str)


def _guess(r: dict):
    """The label a task is pre-filled with: for a partial item its likeliest leaf under the known
    ancestor (the leaf guess, or the next of its top-3 when the climb accepted another parent's
    node; none when no top-3 label lies under it)."""
    if not _partial(r):
        return r.get("category")
    a = r["known_ancestor"]
    for c in (r.get("model_category"), r.get("top1"), r.get("top2"), r.get("top3")):
        if isinstance(c, str) and (c == a or c.startswith(a + CATEGORY_SEP)):
            return c
    return None


def parent_slug(parent: str) -> str:
    """A file-name-safe, collision-free name for a parent category."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", parent).strip("-").lower()[:48] or "category"
    return f"{words}-{hashlib.sha256(parent.encode()).hexdigest()[:8]}"


def _gt_per_parent(out: Path, records: list[dict], gt: list[dict], images: list, cats: list[str]) -> dict:
    """One label-category file and image/text manifests per known ancestor of the partial items."""
    paths, index = {}, {}
    for parent in sorted({r["known_ancestor"] for r in records if _partial(r)}):
        slug = parent_slug(parent)
        stem = out / f"review_queue.partial-{slug}"
        entry = {"items": 0, "categories": f"{stem.name}.gt_label_categories.json"}
        paths[f"groundtruth_partial_{slug}_categories"] = atomic_write_json(
            {"document-version": "2018-11-28", "labels": [{"label": c} for c in allowed_labels(cats, parent)]},
            out / entry["categories"])
        for kind, want_image in (("image", True), ("text", False)):
            lines = [line for line, r, i in zip(gt, records, images)
                     if _partial(r) and r["known_ancestor"] == parent and (i is not None) == want_image]
            if lines:
                entry[kind] = f"{stem.name}.{kind}.manifest.jsonl"
                entry["items"] += len(lines)
                paths[f"groundtruth_partial_{slug}_{kind}"] = atomic_write_text(_jsonl(lines), out / entry[kind])
        index[parent] = entry
    if index:
        paths["groundtruth_parents"] = atomic_write_json(index, out / "review_queue.gt_parents.json")
    return paths


def safe_image(image, image_issue, image_root: str | None, real_root: str | None = None) -> str | None:
    """The image's real path relative to the image root (POSIX), or None when it must not be exported.

    None when the loader reported an issue, the reference is empty, or it does not resolve
    (``..`` and symlinks followed) to a regular file inside the root (the current folder when
    there is no root). ``real_root``: ``os.path.realpath(image_root or ".")`` when the caller
    resolved it already."""
    if isinstance(image_issue, str) and image_issue.strip():
        return None
    if not isinstance(image, str) or not image.strip():
        return None
    try:
        base = real_root if real_root is not None else os.path.realpath(image_root or ".")
        path, _ = resolve_image_path(image.strip(), image_root, base if image_root is not None else None)
        if path is None or not os.path.isfile(path):
            return None
        if os.path.commonpath([base, path]) != base:
            return None
    except (ValueError, OSError):  # NUL bytes, undecodable names
        return None
    return Path(os.path.relpath(path, base)).as_posix()


def _document_root(root: str, s: ReviewExportConfig) -> str:
    return os.path.realpath(s.document_root) if s.document_root else os.path.dirname(root)


def _ls_image(rel: str | None, root: str, s: ReviewExportConfig) -> str:
    """How a Label Studio task names its image; BLANK_IMAGE for a text task."""
    if rel is None:
        return BLANK_IMAGE
    if s.labelstudio_images == "url":
        return s.url_prefix.rstrip("/") + "/" + quote(rel, safe="/")
    if s.labelstudio_images == "s3":
        return s.s3_prefix.rstrip("/") + "/" + rel
    doc_root, real = _document_root(root, s), os.path.join(root, rel)
    if os.path.commonpath([doc_root, real]) != doc_root:
        return BLANK_IMAGE
    return LOCAL_FILES_URL + quote(Path(os.path.relpath(real, doc_root)).as_posix(), safe="/")


def item_text(r: dict) -> str:
    """What a reviewer reads: title, then the (already truncated) description and attribute
    list (``specs``, one ``name: value`` per line: what the text models read too)."""
    parts = [r.get("title"), r.get("description"), r.get("specs")]
    return "\n\n".join(p for p in parts if isinstance(p, str) and p.strip())


def _gt_line(r: dict, rel: str | None, root: str, cats: list[str], s3_prefix: str | None, job_name: str,
             stamp: datetime) -> dict:
    if rel is not None:  # without an S3 prefix: the local file (export warns)
        line: dict = {"source-ref": s3_prefix.rstrip("/") + "/" + rel if s3_prefix else os.path.join(root, rel)}
    else:
        line = {"source": (item_text(r) or str(r.get("item_id")))[:GT_MAX_ATTRIBUTE_CHARS]}
    line.update({k: _short(r.get(k)) for k in META_KEYS if r.get(k) is not None})
    label = _guess(r)
    line[PREDICTION_ATTRIBUTE] = cats.index(label) if label in cats else None
    line[f"{PREDICTION_ATTRIBUTE}-metadata"] = {
        "class-name": label,
        "confidence": _round(r.get("confidence")),
        "type": "groundtruth/image-classification" if rel is not None else "groundtruth/text-classification",
        "job-name": job_name,
        "human-annotated": "no",
        "creation-date": stamp.replace(tzinfo=None).isoformat(timespec="microseconds"),
    }
    return line


def _ls_task(r: dict, image: str, version: str, allowed: list[str]) -> dict:
    hint = (f"Known: {r['known_ancestor']} > ?  Pick one of its {len(allowed)} categories"
            if _partial(r) else FULL_HINT)
    data = {IMAGE_NAME: image, "has_image": image != BLANK_IMAGE, TEXT_NAME: item_text(r),
            HINT_NAME: hint, WHY_NAME: r.get("why") or NO_WHY}
    data.update({k: r.get(k) for k in META_KEYS if r.get(k) is not None})
    data[CHOICES_NAME] = [{"value": c} for c in allowed]
    task: dict = {"data": data, "predictions": []}
    label = _guess(r)
    if isinstance(label, str):
        task["predictions"].append({
            "model_version": version,
            "score": _round(r.get("confidence")),
            "result": [{
                "id": f"pred-{r.get('priority')}",
                "from_name": CONTROL_NAME, "to_name": TEXT_NAME, "type": "choices",
                "value": {"choices": [label]},
            }],
        })
    return task


def _jsonl(lines) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def _short(v):
    return v[:_GT_META_CHARS] if isinstance(v, str) else v


def labelstudio_config() -> str:
    """Labeling config: the image and text for context, the hint (a partial item's known
    ancestor) and the model's reasons, one single-choice category control whose options are
    each task's own ``data.choices``."""
    return (
        "<View>\n"
        f"  <Header value={quoteattr(FULL_HINT)}/>\n"
        f"  <Image name=\"{IMAGE_NAME}\" value=\"${IMAGE_NAME}\" maxWidth=\"480px\"/>\n"
        f"  <Text name=\"{TEXT_NAME}\" value=\"${TEXT_NAME}\"/>\n"
        f"  <Text name=\"{HINT_NAME}\" value=\"${HINT_NAME}\"/>\n"
        f"  <Choices name=\"{CONTROL_NAME}\" toName=\"{TEXT_NAME}\" choice=\"single\" showInLine=\"false\" "
        f"value=\"${CHOICES_NAME}\"/>\n"
        f"  <Text name=\"{WHY_NAME}\" value=\"${WHY_NAME}\"/>\n"
        "</View>\n"
    )


def _categories_in(queue: pd.DataFrame) -> list[str]:
    """The labels the queue names (a partial row's category is an ancestor, not a label)."""
    cols = [c for c in ("model_category", "top1", "top2", "top3") if c in queue]
    vals = set(pd.unique(queue[cols].to_numpy().ravel())) if cols else set()
    if "category" in queue:
        rows = queue["status"] != PARTIAL if "status" in queue else slice(None)
        vals |= set(queue.loc[rows, "category"])
    return sorted(v for v in vals if isinstance(v, str))


def _model_version(queue: pd.DataFrame) -> str:
    """"name/vN" from the prediction columns the nightly run adds; a fixed tag otherwise."""
    def first(col):
        return queue[col].dropna().iloc[0] if col in queue and queue[col].notna().any() else None

    name, version = first("model_name"), first("model_version")
    if version is not None:
        return f"{name or 'catalog-classifier'}/v{version}"
    return str(name or "catalog-classifier")


def _round(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def _clean(r: dict) -> dict:
    """JSON-safe values: NaN/NA -> None, numpy scalars -> Python."""
    out = {}
    for k, v in r.items():
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            out[k] = None
        elif hasattr(v, "item") and not isinstance(v, (str, bytes)):
            out[k] = v.item()
        else:
            out[k] = v
    return out
