"""``catalog-classifier nightly`` (also ``python -m catalog_classifier nightly``): registered on the
main typer app by cli.py. This is the job's only command line."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from ...config import DEFAULT_MODEL_URI


def summary_line(res) -> str:
    """The one JSON line a finished (or skipped) night prints on stdout."""
    return json.dumps({"out": str(res.out_dir), "run_id": res.run_id, "skipped": res.skipped,
                       **res.counts, "parts_reused": res.parts_reused, "parts_computed": res.parts_computed,
                       "parts_recomputed": res.parts_recomputed, "mlflow_run_id": res.manifest.get("mlflow_run_id")})


def limit_threads() -> None:
    n = os.environ.get("CATALOG_CLASSIFIER_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))


def register(app: typer.Typer) -> None:
    @app.command()
    def nightly(
        catalog: Path = typer.Option(..., help="tonight's catalog file (CSV, JSON lines or Parquet)"),
        out: Optional[Path] = typer.Option(None, help="the night's folder (default: nightly.out_dir/<today>)"),
        model: str = typer.Option(DEFAULT_MODEL_URI, help="model dir or MLflow model URI"),
        force: bool = typer.Option(False, "--force", help="recompute a finished night / replace another night"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="run config (default: the model's)"),
        previous: Optional[Path] = typer.Option(None, help="night folder to compare drift against "
                                                "(default: the latest finished sibling of --out)"),
        image_root: Optional[str] = typer.Option(None, help="folder relative image paths resolve under"),
        chunk_size: Optional[int] = typer.Option(None, help="rows per committed part (at least 1)"),
        progress: bool = typer.Option(True, help="show a progress bar"),
        engine: Optional[str] = typer.Option(None, help="local (this process) or ray (Ray Data actor pools; "
                                             "pip install 'catalog-classifier[ray]'); default: nightly.engine"),
        address: Optional[str] = typer.Option(None, help="Ray cluster to join with --engine ray, e.g. auto "
                                              "or ray://head:10001; default: start a local Ray instance"),
        labelstudio_images: Optional[str] = typer.Option(
            None, help="how Label Studio tasks reference images: local-files (/data/local-files/?d=..., "
            "relative to --document-root), url (--image-url-prefix) or s3 (--s3-prefix); "
            "default: review_export.labelstudio_images"),
        document_root: Optional[str] = typer.Option(
            None, help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the image root's parent)"),
        image_url_prefix: Optional[str] = typer.Option(None, help="URL the image root is served under"),
        s3_prefix: Optional[str] = typer.Option(
            None, help="s3:// prefix the image root is mirrored under (Ground Truth source-ref)"),
    ):
        """Categorize tonight's catalog: resumable, every row exactly once, review queue, drift report."""
        from ...preflight import operator_errors
        from .job import nightly_command

        with operator_errors():
            limit_threads()
            res = nightly_command(catalog, out, model, force, config, previous, image_root, chunk_size, progress,
                                  engine, address, review_export={
                                      "labelstudio_images": labelstudio_images, "document_root": document_root,
                                      "url_prefix": image_url_prefix, "s3_prefix": s3_prefix})
        typer.echo(summary_line(res))
