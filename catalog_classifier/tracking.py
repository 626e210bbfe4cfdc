"""MLflow: training runs, the pyfunc model, the registry, and loading a model by URI.

A model version is one directory (see CatalogClassifier.save); MLflow stores it as the
artifact of a pyfunc model and registers it as a new version of ``catalog-classifier``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import model_copies
from .config import CacheConfig, TrackingConfig

log = logging.getLogger(__name__)


def setup(tc: TrackingConfig, experiment: str | None = None):
    """Point MLflow at the configured store; create the experiment with our artifact root."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    mlflow.set_tracking_uri(tc.tracking_uri)
    name = experiment or tc.experiment
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = Path(tc.artifact_location).resolve().as_uri() if "://" not in tc.artifact_location \
            else tc.artifact_location
        mlflow.create_experiment(name, artifact_location=f"{location}/{name}")
    mlflow.set_experiment(name)
    return mlflow


def log_model_version(clf, model_dir: str | Path, metrics: dict[str, float], params: dict[str, Any],
                      tc: TrackingConfig, artifacts: list[str | Path] = (), register: bool = True,
                      tags: dict[str, str] | None = None, input_example=None) -> dict[str, Any]:
    """Log a trained model (params, metrics, pictures, pyfunc) and register a new version.

    The pyfunc model carries the product's code (``code_paths``: the catalog_classifier and
    stacking packages; the product is not on a package index, so a requirement could not be
    installed), its dependencies pinned, a signature with the ``image_root`` param and, when
    given, ``input_example`` (a few catalog rows in the catalog's own columns).
    """
    mlflow = setup(tc)
    from mlflow import MlflowClient

    from .pyfunc import IMAGE_ROOT, CatalogClassifierPyfunc, model_signature, product_code_paths

    root = clf.config.catalog.image_root
    if input_example is not None and root:  # the serving example shows the param too
        input_example = (input_example, {IMAGE_ROOT: str(root)})

    with mlflow.start_run(run_name=f"train-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _is_number(v)})
        for a in artifacts:
            mlflow.log_artifact(str(a), artifact_path="reports")
        mlflow.set_tags({"labels": str(len(clf.labels_)), **(tags or {})})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=CatalogClassifierPyfunc(),
            artifacts={"model_dir": str(Path(model_dir).resolve())},
            code_paths=product_code_paths(), pip_requirements=_requirements(clf),
            signature=model_signature(), input_example=input_example,
            model_config={"model_name": tc.registered_model, "model_run_id": run.info.run_id},
        )
        run_id = run.info.run_id
    out: dict[str, Any] = {"run_id": run_id, "model_uri": info.model_uri, "version": None}
    if register:
        mv = mlflow.register_model(info.model_uri, tc.registered_model)
        client = MlflowClient()
        for k, v in metrics.items():
            if _is_number(v):
                client.set_model_version_tag(tc.registered_model, mv.version, f"metric.{k}", f"{float(v):.6f}")
        client.set_model_version_tag(tc.registered_model, mv.version, "trained_at",
                                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        out["version"] = int(mv.version)
    return out


def _requirements(clf) -> list[str]:
    """The product's own dependencies, each pinned to the version that trained the model
    (``clf.versions_``) or else the installed one."""
    from importlib import metadata

    try:
        declared = [r for r in metadata.requires("catalog-classifier") or [] if "extra ==" not in r]
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        declared = [k for k in clf.versions_ if k not in ("python", "catalog-classifier")]
    out = []
    for req in declared:
        name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0]
        version = clf.versions_.get(name)
        if not version:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        out.append(f"{name}=={version}")
    return out


def _is_number(v) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f


def _model_dir(pyfunc_dir: Path) -> Path:
    """The saved CatalogClassifier directory inside a downloaded pyfunc model (named in MLmodel)."""
    import yaml

    meta = yaml.safe_load((pyfunc_dir / "MLmodel").read_text())
    rel = meta["flavors"]["python_function"]["artifacts"]["model_dir"]["path"]
    return pyfunc_dir / rel


@dataclass
class LoadedModel:
    clf: Any
    name: str
    version: int | None
    run_id: str | None
    source: str


def load_model(uri_or_path: str, tc: TrackingConfig, cache: CacheConfig | None = None) -> LoadedModel:
    """Load a CatalogClassifier from a directory, ``models:/name@alias``, ``models:/name/N`` or
    ``runs:/``; a registry model through its local copy in ``cache.models_dir`` (model_copies.py)."""
    from .classifier import CatalogClassifier

    p = Path(uri_or_path)
    if "://" not in uri_or_path and ":/" not in uri_or_path:
        if not p.exists():
            raise FileNotFoundError(f"model not found: {uri_or_path}")
        meta = p / "registry.json"
        info = json.loads(meta.read_text()) if meta.exists() else {}
        return LoadedModel(CatalogClassifier.load(p), info.get("name", p.name), info.get("version"),
                           info.get("run_id"), str(p))
    mlflow = setup(tc)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name, version, run_id = None, None, None
    try:
        if uri_or_path.startswith("models:/"):
            ref = uri_or_path[len("models:/"):]
            if "@" in ref:
                name, alias = ref.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            else:
                name, ver = ref.rsplit("/", 1)
                mv = client.get_model_version(name, ver)
            version, run_id = int(mv.version), mv.run_id
            source = f"models:/{name}/{version}"
        else:
            source = uri_or_path
    except MlflowException as e:
        raise FileNotFoundError(f"cannot resolve {uri_or_path}: {e.message}") from None
    import hashlib

    cache = cache or CacheConfig()
    # keyed by what the model *is* (run id / source), so another tracking store's "v1" never aliases it
    key = hashlib.sha256(f"{tc.tracking_uri}|{run_id}|{source}".encode()).hexdigest()[:16]
    folder = Path(cache.models_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cache.models_dir {str(folder)!r} is not a folder")
    target = model_copies.use(folder / f"{name or 'model'}-v{version}-{key}",
                              lambda dst: mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst)),
                              cache.max_idle_days)
    clf = CatalogClassifier.load(_model_dir(target))
    return LoadedModel(clf, name or "catalog-classifier", version, run_id, source)
