"""``catalog-classifier labels import``; registered by catalog_classifier/cli.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

CONFIG_OPT = typer.Option(None, "--config", "-c", help="YAML/TOML config file (see catalog_classifier/config.py)")


def load_cfg(config: Optional[Path]):
    from ...config import load_config

    return load_config(config)


def fail(msg: str, code: int = 2):
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def champion_labels(cfg) -> list[str]:
    """The taxonomy of the current champion (its ``labels_``)."""
    from ...config import champion_uri
    from ...tracking import load_model

    return list(load_model(champion_uri(cfg.tracking, cfg.lifecycle), cfg.tracking, cfg.cache).clf.labels_)


def register(app: typer.Typer) -> None:
    labels_app = typer.Typer(help="Reviewer labels: bring them into the labeled store.", no_args_is_help=True)
    app.add_typer(labels_app, name="labels")

    @labels_app.command("import")
    def import_labels_cmd(
        file: Path = typer.Argument(..., help="Ground Truth output manifest, Label Studio JSON export or CSV"),
        source: Optional[str] = typer.Option(None, help="name recorded with each label (default: from the file)"),
        taxonomy: Optional[Path] = typer.Option(None, help="allowed categories: JSON list, text file or model "
                                                "dir (default: the champion's labels)"),
        store: Optional[Path] = typer.Option(None, help="labeled store (default: labels.store in the config)"),
        fmt: Optional[str] = typer.Option(None, "--format", help="groundtruth | labelstudio | csv (default: guess)"),
        allow_unknown: bool = typer.Option(False, help="import the known labels even if some are unknown"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
        config: Optional[Path] = CONFIG_OPT,
    ):
        """Import reviewed labels; duplicates ignored, conflicts reported (latest wins)."""
        from .labels import LabelImportError, import_labels, load_taxonomy

        cfg = load_cfg(config)
        try:
            tax = load_taxonomy(taxonomy) if taxonomy else None
        except LabelImportError as e:
            fail(str(e))
        if tax is None:
            try:
                tax = champion_labels(cfg)
            except FileNotFoundError as e:
                fail(f"no taxonomy: pass --taxonomy, or register a champion model first ({e})")
        try:
            rep = import_labels(file, store or cfg.labels.store, tax, source=source,
                                not_for_training=cfg.labels.not_for_training_label,
                                label_attribute=cfg.labels.label_attribute, allow_unknown=allow_unknown, fmt=fmt)
        except LabelImportError as e:
            fail(str(e))
        if as_json:
            typer.echo(json.dumps(rep.__dict__, indent=2, default=str))
        else:
            typer.echo(rep.summary())
            typer.echo(f"store: {store or cfg.labels.store}")
