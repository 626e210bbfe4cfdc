"""The nightly batch job: one catalog file in, one night folder out, exactly once.

    OUT/manifest.json          identity (input fingerprint, model, config) and status
    OUT/parts/part-NNNNN.parquet one per chunk, committed by atomic rename
    OUT/predictions.parquet    every input row exactly once, ordered by row
    OUT/review/...             review queue exports (nightly.queue / nightly.exports)
    OUT/report.json, report.md counts, review rate, drift

A run killed at any point and started again with the same arguments skips the
committed parts and resumes at the first missing chunk; chunking, prediction and the
merge are deterministic, so the result equals an uninterrupted run. A finished night is
left alone unless ``force``; a night dir holding another input/model/config refuses.

    python -m catalog_classifier.nightly.runner --catalog FILE --out DIR --model DIR_OR_URI
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ..catalog import CatalogError
from ..config import Config, load_config
from .chunks import SeenIds, chunk_rows, open_catalog
from .commit import PARTS, PREDICTIONS, committed_parts, merge_parts, read_part_ids, remove_stale_temps, write_part
from .manifest import (MANIFEST, DirLock, Identity, NightlyError, config_identity, input_fingerprint,
                       model_identity, new_manifest, read_manifest, write_manifest)
from .exports import check_settings
from .outputs import REVIEW_DIR, build_queue
from .report import drift_report, find_previous, log_to_mlflow, summarize, write_report

log = logging.getLogger(__name__)
DEFAULT_MODEL = "models:/catalog-classifier@champion"
_OWN_FILES = (PREDICTIONS, "report.json", "report.md", MANIFEST)
_OWN_DIRS = (PARTS, REVIEW_DIR)


@dataclass
class NightResult:
    out_dir: Path
    run_id: str
    skipped: bool  # the night was already complete: nothing was done
    counts: dict[str, int]
    predictions: Path
    report: Path
    manifest: dict[str, Any]
    parts_reused: int = 0  # committed parts found from an earlier, interrupted run
    parts_computed: int = 0
    review_files: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


SERVE_IMAGE_KEYS = ("cache_dir", "cache_layout", "device", "batch_size")


def _serve_with(clf, cfg: Config) -> None:
    """Operational image settings (cache dir, device, batch size) come from the run's config;
    everything that defines the model (backbone, image size, thresholds) stays as trained."""
    img = {k: getattr(cfg.image, k) for k in SERVE_IMAGE_KEYS}
    if any(getattr(clf.config.image, k) != v for k, v in img.items()):
        clf.config = clf.config.with_overrides(image=img)


def _wipe(out_dir: Path) -> None:
    """Remove this job's own outputs only (never the folder: it may hold other files)."""
    for name in _OWN_DIRS:
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in _OWN_FILES:
        (out_dir / name).unlink(missing_ok=True)


def _prepare(out_dir: Path, ident: Identity, force: bool, catalog: str, date: str) -> dict[str, Any]:
    """The manifest to continue with: the existing one (resume / finished) or a fresh one."""
    old = read_manifest(out_dir)
    if not force:
        if old is not None:
            diffs = ident.differences(old)
            if diffs:
                raise NightlyError(
                    f"{out_dir} holds night {old.get('run_id')} of another run: " + "; ".join(diffs)
                    + ". Use --force to replace it, or choose another --out.")
            return old
        if committed_parts(out_dir) or (out_dir / PREDICTIONS).exists():
            raise NightlyError(f"{out_dir} holds nightly output without a {MANIFEST}; "
                               f"use --force to replace it, or choose another --out")
    _wipe(out_dir)
    manifest = new_manifest(ident, catalog, date, _now())
    write_manifest(out_dir, manifest)
    return manifest


def run_nightly(catalog_path: str | Path, out_dir: str | Path, model, config: Config | None = None,
                force: bool = False, progress: bool = True, date: str | None = None,
                previous: str | Path | None = None) -> NightResult:
    """Categorize one catalog into the night folder ``out_dir`` (resumable, exactly once).

    ``model`` is a tracking.LoadedModel or a CatalogClassifier loaded from a directory.
    ``previous``: night folder to compare drift against (default: the latest finished
    sibling of ``out_dir`` whose name sorts before it, e.g. yesterday's OUT/DATE).
    Raises CatalogError (bad file type, missing file or column) before anything is
    written, NightlyError when ``out_dir`` holds another night or is in use.
    """
    cfg = config or Config()
    out_dir = Path(out_dir)
    stream = open_catalog(catalog_path, cfg.catalog, cfg.nightly.chunk_size)
    clf = getattr(model, "clf", model)
    _serve_with(clf, cfg)
    ident = Identity(input_fingerprint(catalog_path), model_identity(model), config_identity(cfg))
    out_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(out_dir):
        manifest = _prepare(out_dir, ident, force, str(catalog_path), date or dt.date.today().isoformat())
        if manifest.get("status") == "complete" and (out_dir / PREDICTIONS).is_file():
            return _result(out_dir, manifest, skipped=True)
        reused, computed, n_chunks, n_rows = _run_chunks(stream, out_dir, clf, ident, cfg, progress)
        _check_unchanged(Path(catalog_path), ident.input)
        merge_parts(out_dir, n_chunks, n_rows)
        manifest.update(n_chunks=n_chunks, n_rows=n_rows)
        pred = pd.read_parquet(out_dir / PREDICTIONS)
        prev = Path(previous) if previous else find_previous(out_dir)
        report = {
            "run_id": ident.run_id, "date": manifest["date"], "catalog": str(catalog_path),
            "model": ident.model, "chunk_size": cfg.nightly.chunk_size, "config_hash": ident.config_hash,
            "engine": cfg.nightly.engine,
            "summary": summarize(pred),
            "drift": drift_report(pred, clf, prev, cfg.nightly.drift_alpha),
            "review_queue": build_queue(pred, stream, out_dir, cfg, clf, manifest["started_at"]),
            "mlflow_run_id": manifest.get("mlflow_run_id"),
        }
        del pred
        files = write_report(out_dir, report)
        if cfg.tracking.enabled and not manifest.get("mlflow_run_id"):
            manifest["mlflow_run_id"] = report["mlflow_run_id"] = _log_mlflow(report, files, cfg)
            write_manifest(out_dir, manifest)  # a crash before "complete" must not log twice
            files = write_report(out_dir, report)
        manifest.update(status="complete", finished_at=_now(), counts=report["summary"]["counts"],
                        review_rate=report["summary"]["review_rate"],
                        outputs={"predictions": PREDICTIONS, **{k: p.name for k, p in files.items()},
                                 "review": report["review_queue"].get("files", {})})
        write_manifest(out_dir, manifest)
        return _result(out_dir, manifest, skipped=False, reused=reused, computed=computed)


def model_stamp(ident: Identity) -> dict[str, str | None]:
    """The model/run columns every output row carries."""
    return {"model_name": ident.model["name"], "run_id": ident.run_id, "model_run_id": ident.model["run_id"],
            "model_version": None if ident.model["version"] is None else str(ident.model["version"])}


@dataclass
class ChunkPlan:
    """Tallies of a pass over the catalog; ``pending`` yields the chunks still to compute."""

    reused: int = 0
    n_chunks: int = 0
    n_rows: int = 0


def plan_chunks(stream, out_dir: Path, plan: ChunkPlan):
    """Yield (index, raw, items, rejected) for every chunk without a committed part, in file order.

    Committed parts are checked against their chunk and feed the duplicate-id memory, so a
    resumed run rejects exactly the duplicates an uninterrupted one would. Both engines
    read the catalog through this one pass.
    """
    parts = committed_parts(out_dir)
    remove_stale_temps(out_dir)
    seen = SeenIds()
    for i, raw in stream.chunks():
        plan.n_chunks, plan.n_rows = i + 1, plan.n_rows + len(raw)
        if i in parts:
            done = read_part_ids(parts[i])
            if done["row"].tolist() != [int(r) for r in raw.index]:
                raise NightlyError(f"{parts[i]} does not match chunk {i} of {stream.path}; re-run with --force")
            seen.add_committed(done)
            plan.reused += 1
            continue
        items, rejected = stream.validate(raw)
        items, rejected = seen.split(items, rejected)
        yield i, raw, items, rejected


def check_rows(i: int, frame: pd.DataFrame, n_raw: int) -> None:
    if len(frame) != n_raw or frame["row"].duplicated().any():  # the invariant the whole job exists for
        raise RuntimeError(f"chunk {i}: {len(frame)} output rows for {n_raw} input rows")


def _run_chunks(stream, out_dir: Path, clf, ident: Identity, cfg: Config, progress: bool):
    """Commit a part per chunk not yet committed; returns (reused, computed, n_chunks, n_rows)."""
    if cfg.nightly.engine == "ray":
        from .ray_engine import run_chunks_ray

        return run_chunks_ray(stream, out_dir, clf, ident, cfg, progress)
    if cfg.nightly.engine != "local":
        raise NightlyError(f"unknown engine {cfg.nightly.engine!r}: use 'local' or 'ray'")
    stamp, plan, computed = model_stamp(ident), ChunkPlan(), 0
    with tqdm(total=stream.estimate_chunks(), unit="chunk", desc=f"nightly {out_dir.name}",
              disable=not progress) as bar:
        for i, raw, items, rejected in plan_chunks(stream, out_dir, plan):
            frame = chunk_rows(clf, items, rejected, cfg.catalog.image_root, stamp)
            check_rows(i, frame, len(raw))
            write_part(out_dir, i, frame)
            computed += 1
            bar.set_postfix(rows=plan.n_rows, refresh=False)
            bar.update(plan.n_chunks - bar.n)  # committed parts passed over count as done
    return plan.reused, computed, plan.n_chunks, plan.n_rows


def _check_unchanged(path: Path, fp: dict[str, Any]) -> None:
    st = path.stat()
    if (st.st_size, st.st_mtime) != (fp["size"], fp["mtime"]):
        raise NightlyError(f"catalog file {str(path)!r} changed while the night was running; "
                           f"re-run once it is complete (committed parts will be redone with --force)")


def _log_mlflow(report: dict[str, Any], files: dict[str, Path], cfg: Config) -> str | None:
    """MLflow is a side channel: a tracking failure is logged, the night's output stands."""
    try:
        return log_to_mlflow(report, files, cfg)
    except Exception as e:  # noqa: BLE001 - any tracking-store problem
        log.warning("nightly metrics not logged to MLflow (%s): %s", cfg.tracking.tracking_uri, e)
        return None


def _result(out_dir: Path, manifest: dict[str, Any], skipped: bool, reused: int = 0,
            computed: int = 0) -> NightResult:
    return NightResult(out_dir=out_dir, run_id=manifest["run_id"], skipped=skipped,
                       counts=dict(manifest.get("counts") or {}), predictions=out_dir / PREDICTIONS,
                       report=out_dir / "report.json", manifest=manifest, parts_reused=reused,
                       parts_computed=computed, review_files=dict((manifest.get("outputs") or {}).get("review", {})))


# ------------------------------------------------------------------- command line
def nightly_command(catalog: str | Path, out: str | Path | None = None, model: str = DEFAULT_MODEL,
                    force: bool = False, config_path: str | Path | None = None,
                    previous: str | Path | None = None, image_root: str | None = None,
                    chunk_size: int | None = None, progress: bool = True, engine: str | None = None,
                    address: str | None = None, review_export: dict[str, Any] | None = None) -> NightResult:
    """What ``catalog-classifier nightly`` runs.

    With ``--config`` that file is the whole run config (catalog reading, nightly,
    tracking); without, the catalog is read the way the model's own config reads it.
    ``out`` defaults to ``nightly.out_dir/<today>``.
    """
    from ..tracking import load_model

    base = load_config(config_path)
    loaded = load_model(str(model), base.tracking)
    if config_path is None:
        d = loaded.clf.config.to_dict()
        d.update({k: base.to_dict()[k] for k in ("tracking", "nightly", "ray", "review_export")})
        base = Config.from_dict(d)
    overrides = {"catalog": {"image_root": image_root} if image_root else {},
                 "nightly": {k: v for k, v in (("chunk_size", chunk_size), ("engine", engine)) if v},
                 "ray": {"address": address} if address else {},
                 "review_export": {k: v for k, v in (review_export or {}).items() if v is not None}}
    cfg = base.with_overrides(**overrides)
    check_settings(cfg.review_export)  # before the night, not after it
    date = dt.date.today().isoformat()
    out = Path(out) if out else Path(cfg.nightly.out_dir) / date
    return run_nightly(catalog, out, loaded, cfg, force=force, progress=progress, date=date, previous=previous)


def summary_line(res: NightResult) -> str:
    return json.dumps({"out": str(res.out_dir), "run_id": res.run_id, "skipped": res.skipped,
                       **res.counts, "parts_reused": res.parts_reused, "parts_computed": res.parts_computed})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m catalog_classifier.nightly.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--out")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--config")
    ap.add_argument("--previous")
    ap.add_argument("--image-root")
    ap.add_argument("--chunk-size", type=int)
    ap.add_argument("--engine", choices=["local", "ray"])
    ap.add_argument("--address", help="Ray cluster to join (--engine ray); default: a local instance")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("CATALOG_CLASSIFIER_LOG", "WARNING"))
    _limit_threads()
    try:
        res = nightly_command(a.catalog, a.out, a.model, a.force, a.config, a.previous, a.image_root,
                              a.chunk_size, progress=not a.no_progress, engine=a.engine, address=a.address)
    except (CatalogError, NightlyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(res))
    return 0


def _limit_threads() -> None:
    n = os.environ.get("CATALOG_CLASSIFIER_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))


if __name__ == "__main__":
    sys.exit(main())
