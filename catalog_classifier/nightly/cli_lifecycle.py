"""``catalog-classifier labels import | models list|promote|rollback | retrain``; registered by cli.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

CONFIG_OPT = typer.Option(None, "--config", "-c", help="YAML/TOML config file (see catalog_classifier/config.py)")


def _cfg(config: Optional[Path]):
    from ..config import load_config

    return load_config(config)


def _fail(msg: str, code: int = 2):
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def champion_labels(cfg) -> list[str]:
    """The taxonomy of the current champion (its ``labels_``)."""
    from ..tracking import load_model

    uri = f"models:/{cfg.tracking.registered_model}@{cfg.lifecycle.alias}"
    return list(load_model(uri, cfg.tracking).clf.labels_)


def register(app: typer.Typer) -> None:
    labels_app = typer.Typer(help="Reviewer labels: bring them into the labeled store.", no_args_is_help=True)
    models_app = typer.Typer(help="Registered model versions and the champion alias.", no_args_is_help=True)
    app.add_typer(labels_app, name="labels")
    app.add_typer(models_app, name="models")

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

        cfg = _cfg(config)
        try:
            tax = load_taxonomy(taxonomy) if taxonomy else None
        except LabelImportError as e:
            _fail(str(e))
        if tax is None:
            try:
                tax = champion_labels(cfg)
            except FileNotFoundError as e:
                _fail(f"no taxonomy: pass --taxonomy, or register a champion model first ({e})")
        try:
            rep = import_labels(file, store or cfg.labels.store, tax, source=source,
                                not_for_training=cfg.labels.not_for_training_label,
                                label_attribute=cfg.labels.label_attribute, allow_unknown=allow_unknown, fmt=fmt)
        except LabelImportError as e:
            _fail(str(e))
        if as_json:
            typer.echo(json.dumps(rep.__dict__, indent=2, default=str))
        else:
            typer.echo(rep.summary())
            typer.echo(f"store: {store or cfg.labels.store}")

    @models_app.command("list")
    def models_list(config: Optional[Path] = CONFIG_OPT,
                    as_json: bool = typer.Option(False, "--json", help="print as JSON")):
        """Registered versions with their metrics, aliases and creation time."""
        from .lifecycle import format_versions, list_versions

        rows = list_versions(_cfg(config))
        typer.echo(json.dumps(rows, indent=2) if as_json else format_versions(rows))

    @models_app.command("promote")
    def models_promote(version: int = typer.Argument(..., help="model version to make champion"),
                       reason: str = typer.Option("", help="why (kept in the alias log)"),
                       config: Optional[Path] = CONFIG_OPT):
        """Point the champion alias at VERSION and log the move."""
        from .lifecycle import LifecycleError, alias_log_path, promote

        cfg = _cfg(config)
        try:
            entry = promote(cfg, version, reason=reason)
        except LifecycleError as e:
            _fail(str(e))
        if entry is None:
            typer.echo(f"version {version} is already {cfg.lifecycle.alias}; nothing changed")
        else:
            typer.echo(f"{cfg.lifecycle.alias}: v{entry['from_version']} -> v{entry['to_version']} "
                       f"(logged in {alias_log_path(cfg)})")

    @models_app.command("rollback")
    def models_rollback(reason: str = typer.Option("", help="why (kept in the alias log)"),
                        config: Optional[Path] = CONFIG_OPT):
        """Move the champion alias back to the previous champion (from the alias log)."""
        from .lifecycle import LifecycleError, rollback

        cfg = _cfg(config)
        try:
            entry = rollback(cfg, reason=reason)
        except LifecycleError as e:
            _fail(str(e))
        typer.echo(f"{cfg.lifecycle.alias}: v{entry['from_version']} -> v{entry['to_version']} (rollback)")

    @app.command("retrain")
    def retrain_cmd(
        catalog: list[Path] = typer.Option(..., help="catalog file(s) holding the labeled items, repeatable"),
        config: Optional[Path] = CONFIG_OPT,
        store: Optional[Path] = typer.Option(None, help="labeled store (default: labels.store in the config)"),
        image_root: Optional[str] = typer.Option(None, help="folder relative image paths resolve under"),
        out: Optional[Path] = typer.Option(None, help="where the challenger is saved "
                                           "(default: models/challenger-<time>)"),
        force: bool = typer.Option(False, "--force", help="train a challenger even without degradation"),
        progress: bool = typer.Option(False, help="show training progress"),
    ):
        """Judge the champion on fresh labels; if degraded, train a challenger and promote it if better."""
        import pandas as pd

        from ..catalog import CatalogError, read_catalog
        from .lifecycle import LifecycleError
        from .retrain import retrain

        cfg = _cfg(config)
        if image_root:
            cfg = cfg.with_overrides(catalog={"image_root": image_root})
        try:
            cats = [read_catalog(p, cfg.catalog) for p in catalog]
        except (CatalogError, FileNotFoundError) as e:
            _fail(str(e))
        items = pd.concat([c.items for c in cats], ignore_index=True).drop_duplicates("item_id")
        try:
            res = retrain(cfg, items, cfg.catalog.image_root, store=store, force=force, out_dir=out,
                          progress=progress, say=typer.echo)
        except LifecycleError as e:
            _fail(str(e))
        typer.echo(res.message)
        if res.exit_code:
            raise typer.Exit(res.exit_code)
