"""MLflow pyfunc: the served model is the nightly model.

``mlflow.pyfunc.load_model(uri).predict(rows, params={"image_root": ...})`` takes rows in the
catalog's own columns (e.g. raw Flipkart rows) or in the canonical item columns. They are read
the way the nightly job reads a chunk: every cell as text (the catalog reader's rule), the
model's adapter and column mapping, ``validate_items``; then scored and routed by the nightly
job's own ``chunk_rows``. So a served row is the night's row for the same input: ``accepted`` /
``review``, or ``rejected`` with a reason; one output row per input row, in input order.
Values are JSON-safe: NaN and infinities (a category that is never auto-accepted has an infinite
threshold) come back as None.

The signature has no column schema on purpose: MLflow's column enforcement would drop the
columns an adapter reads or refuse rows the nightly job accepts or rejects with a reason.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

IMAGE_ROOT = "image_root"
_MLFLOW_TYPES = {"string": "string", "int64": "long", "double": "double"}


class CatalogClassifierPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from catalog_classifier.classifier import CatalogClassifier

        self.clf = CatalogClassifier.load(context.artifacts["model_dir"])
        # model_name / model_run_id columns of every row; the version is not known at log time
        self.stamp = dict(getattr(context, "model_config", None) or {})

    def predict(self, context, model_input, params=None):
        return serve_rows(self.clf, model_input, (params or {}).get(IMAGE_ROOT), self.stamp)


def serve_rows(clf, rows, image_root: str | None = None, stamp: dict[str, Any] | None = None) -> pd.DataFrame:
    """Output rows (nightly.batch.commit.COLUMNS, JSON-safe) for raw or canonical catalog rows."""
    from mlflow.exceptions import MlflowException

    from catalog_classifier.catalog import CatalogError
    from catalog_classifier.catalog.readers import _as_strings as cells_as_text
    from catalog_classifier.nightly.batch.chunks import chunk_rows

    raw = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    raw = cells_as_text(raw, start=0)
    if image_root and not Path(image_root).is_dir():
        raise MlflowException.invalid_parameter_value(f"image_root {image_root!r} is not a folder")
    try:
        items, rejected = _validated(raw, clf.config.catalog)
    except CatalogError as e:
        raise MlflowException.invalid_parameter_value(
            f"{e} (or send the item schema's own columns: item_id, title, ...)") from None
    night_stamp = {"model_name": None, "model_version": None, "model_run_id": None, "run_id": None}
    night_stamp.update({k: v for k, v in (stamp or {}).items() if k in night_stamp})
    frame = chunk_rows(clf, items, rejected, image_root or clf.config.catalog.image_root, night_stamp)
    return json_safe(frame)


def _validated(raw: pd.DataFrame, cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The model's adapter and column mapping first (as the night reads its catalog); rows that
    already carry the canonical columns (item_id, title, ...) are read by the generic adapter."""
    from catalog_classifier.catalog import CatalogError, adapt, choose_adapter, validate_items
    from catalog_classifier.catalog.schema import REQUIRED_COLUMNS

    try:
        canonical = adapt(raw, choose_adapter(raw.columns, cfg), cfg.columns)
    except CatalogError:
        if not set(REQUIRED_COLUMNS) <= set(raw.columns):
            raise
        canonical = adapt(raw, "generic", {})
    return validate_items(canonical, cfg)


def json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns of plain Python values; NaN, inf and pandas' missing markers become None."""
    def plain(v):
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and not math.isfinite(v)):
            return None
        return v

    return pd.DataFrame({c: pd.Series([plain(v) for v in frame[c].tolist()], index=frame.index, dtype=object)
                         for c in frame.columns}, index=frame.index)


def model_signature():
    """Params schema (``image_root``, optional) and the output columns; no input column schema."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    from catalog_classifier.nightly.batch.commit import SCHEMA

    outputs = Schema([ColSpec(_MLFLOW_TYPES[str(f.type)], f.name, required=False) for f in SCHEMA])
    return ModelSignature(inputs=None, outputs=outputs,
                          params=ParamSchema([ParamSpec(IMAGE_ROOT, "string", None)]))


def catalog_example(path: str | Path, n: int = 2) -> pd.DataFrame | None:
    """The first ``n`` rows of a catalog file in its own columns (the model's input example)."""
    from catalog_classifier.catalog import CatalogError, iter_table_chunks

    try:
        first = next(iter(iter_table_chunks(path, n)), None)
    except (CatalogError, OSError):
        return None
    return None if first is None or not len(first) else first.reset_index(drop=True)


def product_code_paths() -> list[str]:
    """The product's packages, copied into the MLflow model so it loads where they are not installed."""
    import catalog_classifier
    import stacking

    return [str(Path(m.__file__).parent) for m in (catalog_classifier, stacking)]
