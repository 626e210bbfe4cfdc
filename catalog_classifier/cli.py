"""``catalog-classifier``: a thin command-line layer over the facade and the nightly job."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import typer

from .config import DEFAULT_MODEL_URI, Config, load_config
from .preflight import existing_dir, existing_file, label_depth, operator_errors, usable_dir, usable_file

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Categorize crawled product catalogs; route unsure items to human review.")

CONFIG_OPT = typer.Option(None, "--config", "-c", help="YAML/TOML config file (see catalog_classifier/config.py)")


def _config(config: Optional[Path], adapter: Optional[str] = None, columns: list[str] | None = None,
            image_root: Optional[str] = None, level: Optional[str] = None,
            target_precision: Optional[float] = None) -> Config:
    cfg = load_config(config)
    if image_root is not None:
        existing_dir(image_root, "--image-root")
    cat = {}
    if adapter:
        cat["adapter"] = adapter
    if columns:
        mapping = {}
        for spec in columns:
            if "=" not in spec:
                raise typer.BadParameter(f"--map takes canonical=source, got {spec!r}")
            k, v = spec.split("=", 1)
            mapping[k.strip()] = v.strip()
        cat["columns"] = mapping
    if image_root:
        cat["image_root"] = image_root
    if level:
        cat["label_depth"] = label_depth(level, "--level")
    stack = {"target_precision": target_precision} if target_precision else {}
    return cfg.with_overrides(catalog=cat, stack=stack)


def _read(catalog: Path, cfg: Config):
    from .catalog import read_catalog

    return read_catalog(existing_file(catalog, "--catalog"), cfg.catalog)


@app.command()
def train(
    catalog: Path = typer.Option(..., help="catalog file (CSV, JSON lines or Parquet) with category labels"),
    out: Path = typer.Option(Path("models/latest"), help="directory the model version is saved to"),
    config: Optional[Path] = CONFIG_OPT,
    adapter: Optional[str] = typer.Option(None, help="flipkart | bigbasket | generic (auto-detected)"),
    map: list[str] = typer.Option(None, "--map", help="column mapping canonical=source, repeatable"),
    image_root: Optional[str] = typer.Option(None, help="folder relative image paths resolve under"),
    level: Optional[str] = typer.Option(None, help="category depth used as label: 1, 2, ... or leaf"),
    target_precision: Optional[float] = typer.Option(None, help="precision auto-accepted items must reach"),
    register: bool = typer.Option(True, help="log to MLflow and register a new model version"),
):
    """Train the stacked categorizer on a labeled catalog and save one model version."""
    from .training import train_and_log

    with operator_errors():
        cfg = _config(config, adapter, map, image_root, level, target_precision)
        usable_dir(out, "--out")
        cat = _read(catalog, cfg)
    summary = train_and_log(cat, cfg, out, register=register)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def predict(
    catalog: Path = typer.Option(..., help="catalog file to categorize"),
    model: str = typer.Option(DEFAULT_MODEL_URI, help="model dir or MLflow model URI"),
    out: Path = typer.Option(Path("out/predictions.parquet"), help=".parquet or .csv"),
    config: Optional[Path] = CONFIG_OPT,
    image_root: Optional[str] = typer.Option(None),
    map: list[str] = typer.Option(None, "--map", help="column mapping canonical=source, repeatable"),
):
    """Categorize a catalog with a trained model (one-off; the nightly job adds resumability)."""
    from .io_utils import atomic_write_table
    from .tracking import load_model

    with operator_errors():
        cfg = _config(config, columns=map, image_root=image_root)
        usable_file(out, "--out")
        existing_file(catalog, "--catalog")
        loaded = load_model(model, cfg.tracking, cfg.cache)
        # the catalog is read with the model's own catalog settings unless overridden here
        read_cfg = loaded.clf.config.with_overrides(catalog={k: v for k, v in {
            "image_root": image_root, "columns": cfg.catalog.columns}.items() if v})
        cat = _read(catalog, read_cfg)
    pred = loaded.clf.predict(cat.items, image_root=cat.image_root, progress=True)
    atomic_write_table(pred, out)
    counts = pred["status"].value_counts().to_dict()
    typer.echo(json.dumps({"items": len(pred), "rejected": len(cat.rejected), **counts, "out": str(out)}))


@app.command()
def evaluate(
    catalog: Path = typer.Option(..., help="labeled catalog file"),
    name: Optional[str] = typer.Option(None, help="catalog name in the report (default: file stem)"),
    level: list[str] = typer.Option(["1"], help="label depth(s) to evaluate (1, 2, ... or leaf), repeatable"),
    folds: int = typer.Option(5, help="outer cross-validation folds"),
    inner_folds: Optional[int] = typer.Option(None, help="inner out-of-fold folds (default: config)"),
    config: Optional[Path] = CONFIG_OPT,
    adapter: Optional[str] = typer.Option(None),
    image_root: Optional[str] = typer.Option(None),
    report: Path = typer.Option(Path("reports/evaluation.json"), help="records are merged into this file"),
    log_mlflow: bool = typer.Option(True, help="log metrics and pictures to MLflow"),
    protocol: str = typer.Option("nested", help="nested: every outer fold trains the whole product "
                                 "(honest, K+1 fits per fold); oof: score one fit's own out-of-fold "
                                 "layer (one fit; for large catalogs)"),
    ablation: bool = typer.Option(True, "--ablation/--no-ablation",
                                  help="also score the stack without each base model (meta layer re-fitted "
                                  "on the same folds; base models not retrained)"),
    scores: Optional[Path] = typer.Option(None, help="also save every model's held-out probabilities "
                                          "with item ids, labels and folds here (<name>_L<level>.npz)"),
):
    """Stratified, grouped K-fold CV of the stack, each base model and the TF-IDF peer."""
    if protocol not in ("nested", "oof"):
        raise typer.BadParameter("--protocol must be 'nested' or 'oof'")
    from .training import evaluate_and_report

    with operator_errors():
        cfg = _config(config, adapter, None, image_root)
        levels = [label_depth(v, "--level") for v in level]
        usable_file(report, "--report")
        if scores is not None:
            usable_dir(scores, "--scores")
        if inner_folds:
            cfg = cfg.with_overrides(stack={"n_folds": inner_folds})
        cat = _read(catalog, cfg)
    out = evaluate_and_report(cat, cfg, name or catalog.stem, levels, folds, report, log_mlflow, protocol,
                              ablation, scores)
    typer.echo(json.dumps(out, indent=2))


def main():  # pragma: no cover - console entry
    level = os.environ.get("CATALOG_CLASSIFIER_LOG", "WARNING")
    logging.basicConfig(level=level)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)  # MLflow's own handler logs INFO on stderr otherwise
    app()


# The nightly, review and lifecycle commands live next to their code.
from .nightly.batch import cli as batch_cli  # noqa: E402
from .nightly.lifecycle import cli as lifecycle_cli  # noqa: E402
from .nightly.review import cli as review_cli  # noqa: E402

for _module in (batch_cli, review_cli, lifecycle_cli):
    _module.register(app)
