"""Review-queue exports for the labeling tools people actually use.

- ``review_queue.csv``: the queue as a table.
- ``review_queue.manifest.jsonl``: a SageMaker Ground Truth augmented manifest. One JSON object
  a line with ``source-ref`` (the image, s3:// or a file path) or, for items without an image,
  ``source`` (the text itself), as Ground Truth's input manifest allows. The model's guess rides
  along as a label attribute (``predicted-category``: class index) with its ``-metadata`` object
  (class-name, confidence, type, job-name, human-annotated "no", creation-date), the layout Ground
  Truth writes itself, so a verification/adjustment job or a later import can read it.
- ``review_queue.gt_label_categories.json``: the label-category config for the Ground Truth job.
- ``review_queue.labelstudio.json``: Label Studio tasks with ``predictions`` (pre-annotations);
  ``score`` is the model confidence, which Label Studio's Data Manager sorts on (lowest first).
  ``data.priority`` keeps the queue's own order.
- ``labelstudio_config.xml``: the matching labeling config (Choices "category" over Text "text").

Every file is written to a temporary name and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd

from ..io_utils import atomic_write_json, atomic_write_table, atomic_write_text

PREDICTION_ATTRIBUTE = "predicted-category"
CONTROL_NAME = "category"  # Label Studio <Choices name=...>; the import reads it back
TEXT_NAME = "text"
IMAGE_NAME = "image"
META_KEYS = ("item_id", "title", "brand", "domain", "url", "queue_reason", "priority", "top1", "top2",
             "top3", "rule_id")


def export_review_queue(queue: pd.DataFrame, out_dir: str | Path, image_root: str | None = None, *,
                        categories: list[str] | None = None, model_version: str | None = None,
                        job_name: str = "catalog-classifier-review", created_at: datetime | None = None,
                        labelstudio_image_prefix: str | None = None) -> dict[str, Path]:
    """Write the queue as CSV, Ground Truth manifest, Label Studio tasks + config; return the paths.

    ``categories`` is the taxonomy (the model's ``labels_``): it fixes the Ground Truth class
    indices and the Label Studio choices. ``created_at`` (default: now) is stamped on every
    prediction; pass the night's own time to make reruns byte-identical.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cats = list(categories) if categories is not None else _categories_in(queue)
    stamp = (created_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    version = model_version or _model_version(queue)
    records = [_clean(r) for r in queue.to_dict(orient="records")]
    paths = {
        "csv": atomic_write_table(queue, out / "review_queue.csv"),
        "groundtruth": atomic_write_text(
            "".join(json.dumps(_gt_line(r, cats, image_root, job_name, stamp), ensure_ascii=False) + "\n"
                    for r in records), out / "review_queue.manifest.jsonl"),
        "groundtruth_categories": atomic_write_json(
            {"document-version": "2018-11-28", "labels": [{"label": c} for c in cats]},
            out / "review_queue.gt_label_categories.json"),
        "labelstudio": atomic_write_json(
            [_ls_task(r, image_root, labelstudio_image_prefix, version) for r in records],
            out / "review_queue.labelstudio.json"),
        "labelstudio_config": atomic_write_text(labelstudio_config(cats), out / "labelstudio_config.xml"),
    }
    return paths


def image_ref(image, image_root: str | None) -> str | None:
    """s3://, http(s):// and file:// references stay as they are; relative paths join the root."""
    if not isinstance(image, str) or not image.strip():
        return None
    if "://" in image:
        return image
    if image_root is None:
        return image
    if "://" in image_root:
        return image_root.rstrip("/") + "/" + image.lstrip("/")
    return str(Path(image_root) / image)


def item_text(r: dict) -> str:
    """What a reviewer reads: title, then the (already truncated) description."""
    parts = [r.get("title"), r.get("description")]
    return "\n\n".join(p for p in parts if isinstance(p, str) and p.strip())


def _gt_line(r: dict, cats: list[str], image_root, job_name: str, stamp: datetime) -> dict:
    ref = image_ref(r.get("image"), image_root)
    line: dict = {"source-ref": ref} if ref else {"source": item_text(r)}
    line.update({k: r.get(k) for k in META_KEYS if r.get(k) is not None})
    label = r.get("category")
    line[PREDICTION_ATTRIBUTE] = cats.index(label) if label in cats else None
    line[f"{PREDICTION_ATTRIBUTE}-metadata"] = {
        "class-name": label,
        "confidence": _round(r.get("confidence")),
        "type": "groundtruth/image-classification" if ref else "groundtruth/text-classification",
        "job-name": job_name,
        "human-annotated": "no",
        "creation-date": stamp.replace(tzinfo=None).isoformat(timespec="microseconds"),
    }
    return line


def _ls_task(r: dict, image_root, prefix: str | None, version: str) -> dict:
    ref = image_ref(r.get("image"), image_root)
    if ref and prefix and "://" not in ref:
        ref = prefix + ref
    data = {IMAGE_NAME: ref or "", TEXT_NAME: item_text(r)}
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
