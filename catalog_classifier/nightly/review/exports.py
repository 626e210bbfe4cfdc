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
- ``review_queue.labelstudio.json``: Label Studio tasks with ``predictions`` (pre-annotations,
  with ``model_version`` and ``score`` = the model confidence). Tasks are in queue order, so Label
  Studio's default order (task id) is the queue's; ``data.priority`` keeps it for sorting too.
  Images are referenced as ``review_export.labelstudio_images`` says (local-files URL, URL prefix
  or s3://); an item without a usable image gets a blank inline placeholder (no file reference)
  and ``data.has_image`` false: a text task in the same project.
- ``labelstudio_config.xml``: the matching labeling config (Choices "category" over Text "text").

An image is referenced only when the loader used it (no ``image_issue``) and it is a regular file
inside the image root; a refused or missing image (``/etc/passwd``, ``../``, ``file://``, a symlink
out of the root) is never written into any export. Every file is written atomically.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pandas as pd

from ...config import ReviewExportConfig
from ...features.images import resolve_image_path
from ...io_utils import atomic_write_json, atomic_write_table, atomic_write_text
from ...preflight import OperatorError

log = logging.getLogger(__name__)
PREDICTION_ATTRIBUTE = "predicted-category"
CONTROL_NAME = "category"  # Label Studio <Choices name=...>; the import reads it back
TEXT_NAME = "text"
IMAGE_NAME = "image"
META_KEYS = ("item_id", "title", "brand", "domain", "url", "queue_reason", "priority", "top1", "top2",
             "top3", "rule_id")
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
    images = [safe_image(r.get("image"), r.get("image_issue"), image_root) for r in records]
    gt = [_gt_line(r, img, root, cats, s.s3_prefix, job_name, stamp) for r, img in zip(records, images)]
    ls = [_ls_task(r, _ls_image(img, root, s), version) for r, img in zip(records, images)]
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
    res.paths = {
        "csv": atomic_write_table(queue.assign(image=[r.get("image") if i is not None else None
                                                       for r, i in zip(records, images)]),
                                  out / "review_queue.csv"),
        "groundtruth_image": atomic_write_text(_jsonl(line for line, i in zip(gt, images) if i is not None),
                                               out / "review_queue.image.manifest.jsonl"),
        "groundtruth_text": atomic_write_text(_jsonl(line for line, i in zip(gt, images) if i is None),
                                              out / "review_queue.text.manifest.jsonl"),
        "groundtruth_categories": atomic_write_json(
            {"document-version": "2018-11-28", "labels": [{"label": c} for c in cats]},
            out / "review_queue.gt_label_categories.json"),
        "labelstudio": atomic_write_json(ls, out / "review_queue.labelstudio.json"),
        "labelstudio_config": atomic_write_text(labelstudio_config(cats), out / "labelstudio_config.xml"),
    }
    return res


def safe_image(image, image_issue, image_root: str | None) -> str | None:
    """The image's real path relative to the image root (POSIX), or None when it must not be exported.

    None when the loader reported an issue, the reference is empty, or it does not resolve
    (``..`` and symlinks followed) to a regular file inside the root (the current folder when
    there is no root)."""
    if isinstance(image_issue, str) and image_issue.strip():
        return None
    if not isinstance(image, str) or not image.strip():
        return None
    try:
        path, _ = resolve_image_path(image.strip(), image_root)
        if path is None or not os.path.isfile(path):
            return None
        base = os.path.realpath(image_root or ".")
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
    """What a reviewer reads: title, then the (already truncated) description."""
    parts = [r.get("title"), r.get("description")]
    return "\n\n".join(p for p in parts if isinstance(p, str) and p.strip())


def _gt_line(r: dict, rel: str | None, root: str, cats: list[str], s3_prefix: str | None, job_name: str,
             stamp: datetime) -> dict:
    if rel is not None:  # without an S3 prefix: the local file (export warns)
        line: dict = {"source-ref": s3_prefix.rstrip("/") + "/" + rel if s3_prefix else os.path.join(root, rel)}
    else:
        line = {"source": (item_text(r) or str(r.get("item_id")))[:GT_MAX_ATTRIBUTE_CHARS]}
    line.update({k: _short(r.get(k)) for k in META_KEYS if r.get(k) is not None})
    label = r.get("category")
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


def _ls_task(r: dict, image: str, version: str) -> dict:
    data = {IMAGE_NAME: image, "has_image": image != BLANK_IMAGE, TEXT_NAME: item_text(r)}
    data.update({k: r.get(k) for k in META_KEYS if r.get(k) is not None})
    task: dict = {"data": data, "predictions": []}
    if isinstance(r.get("category"), str):
        task["predictions"].append({
            "model_version": version,
            "score": _round(r.get("confidence")),
            "result": [{
                "id": f"pred-{r.get('priority')}",
                "from_name": CONTROL_NAME, "to_name": TEXT_NAME, "type": "choices",
                "value": {"choices": [r["category"]]},
            }],
        })
    return task


def _jsonl(lines) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def _short(v):
    return v[:_GT_META_CHARS] if isinstance(v, str) else v


def labelstudio_config(categories: list[str]) -> str:
    """Labeling config: the image and text for context, one single-choice category control."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in categories)
    return (
        "<View>\n"
        f"  <Header value={quoteattr('Pick the product category')}/>\n"
        f"  <Image name=\"{IMAGE_NAME}\" value=\"${IMAGE_NAME}\" maxWidth=\"480px\"/>\n"
        f"  <Text name=\"{TEXT_NAME}\" value=\"${TEXT_NAME}\"/>\n"
        f"  <Choices name=\"{CONTROL_NAME}\" toName=\"{TEXT_NAME}\" choice=\"single\" showInLine=\"false\">\n"
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _categories_in(queue: pd.DataFrame) -> list[str]:
    cols = [c for c in ("category", "top1", "top2", "top3") if c in queue]
    vals = pd.unique(queue[cols].to_numpy().ravel()) if cols else []
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
