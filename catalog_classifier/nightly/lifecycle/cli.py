"""``catalog-classifier models list|promote|rollback | retrain``; registered by catalog_classifier/cli.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..review.cli import CONFIG_OPT, fail, load_cfg


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="Registered model versions and the champion alias.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def models_list(config: Optional[Path] = CONFIG_OPT,
                    as_json: bool = typer.Option(False, "--json", help="print as JSON")):
        """Registered versions with their metrics, aliases and creation time."""
        from .aliases import format_versions, list_versions

        rows = list_versions(load_cfg(config))
        typer.echo(json.dumps(rows, indent=2) if as_json else format_versions(rows))

    @models_app.command("promote")
    def models_promote(version: int = typer.Argument(..., help="model version to make champion"),
                       reason: str = typer.Option("", help="why (kept in the alias log)"),
                       config: Optional[Path] = CONFIG_OPT):
        """Point the champion alias at VERSION and log the move."""
        from .aliases import LifecycleError, alias_log_path, promote

        cfg = load_cfg(config)
        try:
            entry = promote(cfg, version, reason=reason)
        except LifecycleError as e:
            fail(str(e))
        if entry is None:
            typer.echo(f"version {version} is already {cfg.lifecycle.alias}; nothing changed")
        else:
            typer.echo(f"{cfg.lifecycle.alias}: v{entry['from_version']} -> v{entry['to_version']} "
                       f"(logged in {alias_log_path(cfg)})")

    @models_app.command("rollback")
    def models_rollback(reason: str = typer.Option("", help="why (kept in the alias log)"),
                        config: Optional[Path] = CONFIG_OPT):
        """Move the champion alias back to the previous champion (from the alias log)."""
        from .aliases import LifecycleError, rollback

        cfg = load_cfg(config)
        try:
            entry = rollback(cfg, reason=reason)
        except LifecycleError as e:
            fail(str(e))
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

        from ...catalog import CatalogError, read_catalog
        from .aliases import LifecycleError
        from .retrain import retrain

        cfg = load_cfg(config)
        if image_root:
            cfg = cfg.with_overrides(catalog={"image_root": image_root})
        try:
            cats = [read_catalog(p, cfg.catalog) for p in catalog]
        except (CatalogError, FileNotFoundError) as e:
            fail(str(e))
        items = pd.concat([c.items for c in cats], ignore_index=True).drop_duplicates("item_id")
        try:
            res = retrain(cfg, items, cfg.catalog.image_root, store=store, force=force, out_dir=out,
                          progress=progress, say=typer.echo)
        except LifecycleError as e:
            fail(str(e))
        typer.echo(res.message)
        if res.exit_code:
            raise typer.Exit(res.exit_code)
