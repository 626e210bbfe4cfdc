"""``python -m bench [--quick]`` from the repository root (``make bench``, ``make bench-quick``).

The benchmark is not part of the installed product: it uses the product's public API and
its timing hook (``catalog_classifier.events``), and nothing in the product imports it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


app = typer.Typer(add_completion=False)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="tiny settings that check the harness end to end "
                               "(CI, ~1-2 min); figures are not meaningful"),
    out: Optional[Path] = typer.Option(None, help="where results.json and RESULTS.md go "
                                       "(default: bench/, or out/bench-quick with --quick)"),
    section: list[str] = typer.Option(None, "--section", help="quality | throughput | scaling | engines | taxonomy "
                                      "(repeatable; default: all)"),
    work: Optional[Path] = typer.Option(None, help="scratch folder, wiped first (default: out/bench-work)"),
    gpu: bool = typer.Option(False, "--gpu", help="run the throughput section on CUDA and add it as the "
                             "'gpu' block of an existing results.json (see bench/gpu.sh)"),
    threads: Optional[int] = typer.Option(None, help="torch threads in the measuring processes"),
    note: list[str] = typer.Option(None, "--note", help="a line about the run's conditions, for RESULTS.md"),
    resume: bool = typer.Option(False, "--resume", help="keep the scratch folder and reuse measurements "
                                "finished there with identical settings (after an interrupted run)"),
    render: bool = typer.Option(False, "--render", help="only re-write RESULTS.md from OUT/results.json "
                                "(adding any --note)"),
):
    """Benchmark quality, throughput, scaling and training cost; write results.json + RESULTS.md."""
    from .runner import SECTIONS, run_bench
    from .worker import BenchError

    sections = tuple(section or SECTIONS)
    bad = set(sections) - set(SECTIONS)
    if bad:
        raise typer.BadParameter(f"unknown section(s) {sorted(bad)}; known: {list(SECTIONS)}")
    if gpu:
        import torch

        if not torch.cuda.is_available():
            typer.secho("error: --gpu needs a CUDA device; none is visible", fg="red", err=True)
            raise typer.Exit(3)
    out = out or (Path("out/bench-quick") if quick else Path("bench"))
    if render:
        import json

        from .report import write_markdown
        from .runner import write_results

        res = json.loads((out / "results.json").read_text())
        if note:
            res["notes"] = res.get("notes", []) + list(note)
            write_results(res, out / "results.json")
        typer.echo(str(write_markdown(res, out / "RESULTS.md")))
        return
    try:
        run_bench(out, quick=quick, sections=sections, work=work, gpu=gpu, threads=threads, notes=note or [],
                  resume=resume)
    except BenchError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app(prog_name="python -m bench")
