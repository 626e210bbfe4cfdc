"""``catalog-classifier nightly``: registered on the main typer app by cli.py."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def nightly(
        catalog: Path = typer.Option(..., help="tonight's catalog file (CSV, JSON lines or Parquet)"),
        out: Optional[Path] = typer.Option(None, help="the night's folder (default: nightly.out_dir/<today>)"),
        model: str = typer.Option("models:/catalog-classifier@champion", help="model dir or MLflow model URI"),
        force: bool = typer.Option(False, "--force", help="recompute a finished night / replace another night"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="run config (default: the model's)"),
        previous: Optional[Path] = typer.Option(None, help="night folder to compare drift against "
                                                "(default: the latest finished sibling of --out)"),
        image_root: Optional[str] = typer.Option(None, help="folder relative image paths resolve under"),
        chunk_size: Optional[int] = typer.Option(None, help="rows per committed part"),
        progress: bool = typer.Option(True, help="show a progress bar"),
        engine: Optional[str] = typer.Option(None, help="local (this process) or ray (Ray Data actor pools; "
                                             "pip install 'catalog-classifier[ray]'); default: nightly.engine"),
        address: Optional[str] = typer.Option(None, help="Ray cluster to join with --engine ray, e.g. auto "
                                              "or ray://head:10001; default: start a local Ray instance"),
    ):
        """Categorize tonight's catalog: resumable, every row exactly once, review queue, drift report."""
        from ..catalog import CatalogError
        from .manifest import NightlyError
        from .runner import _limit_threads, nightly_command, summary_line

        _limit_threads()
        try:
            res = nightly_command(catalog, out, model, force, config, previous, image_root, chunk_size, progress,
                                  engine, address)
        except (CatalogError, NightlyError, FileNotFoundError) as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2)
        typer.echo(summary_line(res))
