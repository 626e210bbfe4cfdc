"""The nightly batch job: one catalog file in, one night folder out, exactly once.

    OUT/manifest.json          identity (input fingerprint, model, config) and status
    OUT/parts/part-NNNNN.parquet one per chunk, committed by atomic rename
    OUT/predictions.parquet    every input row exactly once, ordered by row
    OUT/review/...             review queue exports (nightly/review)
    OUT/report.json, report.md counts, review rate, drift

A run killed at any point and started again with the same arguments skips the
committed parts and resumes at the first missing chunk; chunking, prediction and the
merge are deterministic, so the result equals an uninterrupted run. A finished night is
left alone unless ``force``; a night dir holding another input/model/config refuses.

    python -m catalog_classifier nightly --catalog FILE --out DIR --model DIR_OR_URI
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ... import events
from ...config import DEFAULT_MODEL_URI, Config, load_config
from ...preflight import OperatorError, at_least_one, existing_dir, existing_file, usable_dir
from ..review.builder import REVIEW_DIR, build_queue
from ..review.exports import check_settings
from .chunks import open_catalog
from .commit import PARTS, PREDICTIONS, committed_parts, drop_part, merge_parts, part_checksums, verify_part
from .engines import get_engine
from .manifest import (MANIFEST, Identity, NightlyError, config_identity, input_fingerprint, model_identity,
                       new_manifest, night_lock, read_manifest, write_manifest)
from .plan import serving
from .report import drift_report, find_previous, log_to_mlflow, open_mlflow_run, summarize, write_report

log = logging.getLogger(__name__)
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
    parts_computed: int = 0  # recomputed parts included
    parts_recomputed: list[dict[str, Any]] = field(default_factory=list)  # damaged parts redone: part, reason
    review_files: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _serve_with(clf, cfg: Config) -> None:
    """Operational settings (image cache dir, device, batch size, runtime; the content caches) come
    from the run's config; everything that defines the model (backbone, image size, thresholds)
    stays as trained."""
    over = serving(cfg)
    if any(getattr(getattr(clf.config, sec), k) != v for sec, vals in over.items() for k, v in vals.items()):
        clf.config = clf.config.with_overrides(**over)


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
    Raises OperatorError (unusable ``out_dir``, chunk size < 1, missing image folder) or
    CatalogError (bad file type, missing file or column) before anything is written,
    NightlyError when ``out_dir`` holds another night or is in use, or the engine is unknown.
    """
    cfg = config or Config()
    out_dir = usable_dir(out_dir, "--out")
    at_least_one(cfg.nightly.chunk_size, "nightly.chunk_size")
    if cfg.catalog.image_root is not None:
        existing_dir(cfg.catalog.image_root, "image root (--image-root / catalog.image_root)")
    engine = get_engine(cfg.nightly.engine)
    stream = open_catalog(catalog_path, cfg.catalog, cfg.nightly.chunk_size)
    clf = getattr(model, "clf", model)
    _serve_with(clf, cfg)
    ident = Identity(input_fingerprint(catalog_path), model_identity(model), config_identity(cfg))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OperatorError(f"--out {str(out_dir)!r} cannot be created: {e.strerror or e}") from None
    with night_lock(out_dir), _frozen_heap():
        manifest = _prepare(out_dir, ident, force, str(catalog_path), date or dt.date.today().isoformat())
        if manifest.get("status") == "complete" and (out_dir / PREDICTIONS).is_file():
            return _result(out_dir, manifest, skipped=True)
        recomputed = _drop_damaged_parts(out_dir, manifest)
        reused, computed, n_chunks, n_rows = engine.run_chunks(stream, out_dir, clf, ident, cfg, progress)
        _check_unchanged(Path(catalog_path), ident.input)
        with events.stage("nightly.merge"):
            merge_parts(out_dir, n_chunks, n_rows)
        manifest.update(n_chunks=n_chunks, n_rows=n_rows, parts_sha256=part_checksums(out_dir))
        mlflow_id = _open_mlflow_run(out_dir, manifest, cfg)
        pred = pd.read_parquet(out_dir / PREDICTIONS)
        summary = summarize(pred, stream.stats)  # stats of the scoring pass
        prev = Path(previous) if previous else find_previous(out_dir)
        with events.stage("nightly.drift"):
            drift = drift_report(pred, clf, prev, cfg.nightly.drift_alpha)
        with events.stage("nightly.queue"):
            queue = build_queue(pred, n_chunks, out_dir, cfg, clf, manifest["started_at"])
        report = {
            "run_id": ident.run_id, "date": manifest["date"], "catalog": str(catalog_path),
            "model": ident.model, "chunk_size": cfg.nightly.chunk_size, "config_hash": ident.config_hash,
            "engine": cfg.nightly.engine,
            "summary": summary,
            "drift": drift,
            "review_queue": queue,
            "parts_recomputed": recomputed,
            "mlflow_run_id": mlflow_id,
        }
        del pred
        with events.stage("nightly.report"):
            files = write_report(out_dir, report)
        if mlflow_id and not manifest.get("mlflow_logged"):
            manifest["mlflow_logged"] = _tracking(log_to_mlflow, cfg, mlflow_id, report, files, cfg) is not None
        manifest.update(status="complete", finished_at=_now(), counts=report["summary"]["counts"],
                        review_rate=report["summary"]["review_rate"],
                        outputs={"predictions": PREDICTIONS, **{k: p.name for k, p in files.items()},
                                 "review": report["review_queue"].get("files", {})})
        write_manifest(out_dir, manifest)
        return _result(out_dir, manifest, skipped=False, reused=reused, computed=computed)


@contextlib.contextmanager
def _frozen_heap():
    """The objects alive when the night starts (libraries, the loaded model: ~400k of them) sit
    out the night's cyclic garbage collections, which then scan only what the night allocates;
    a full collection over all of them took 0.2-0.3 s. They rejoin the heap afterwards."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _check_unchanged(path: Path, fp: dict[str, Any]) -> None:
    st = path.stat()
    if (st.st_size, st.st_mtime) != (fp["size"], fp["mtime"]):
        raise NightlyError(f"catalog file {str(path)!r} changed while the night was running; "
                           f"re-run once it is complete (committed parts will be redone with --force)")


def _drop_damaged_parts(out_dir: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Remove committed parts that fail their checksum, so the engine recomputes them.

    The manifest names them before they are removed: a crash after that still reports them.
    Returns every part recomputed in this night, with its reason.
    """
    damaged = [{"part": p.name, "chunk": i, "reason": why}
               for i, p in committed_parts(out_dir).items() if (why := verify_part(p))]
    if damaged:
        manifest["parts_recomputed"] = list(manifest.get("parts_recomputed") or []) + damaged
        write_manifest(out_dir, manifest)
        for d in damaged:
            log.warning("recomputing %s: %s", d["part"], d["reason"])
            drop_part(out_dir / PARTS / d["part"])
    return list(manifest.get("parts_recomputed") or [])


def _open_mlflow_run(out_dir: Path, manifest: dict[str, Any], cfg: Config) -> str | None:
    """The night's MLflow run id, recorded in the manifest before anything is logged to it, so a
    re-run after a crash while logging resumes that run instead of starting a second one."""
    if not cfg.tracking.enabled or manifest.get("mlflow_run_id"):
        return manifest.get("mlflow_run_id")
    run_id = _tracking(open_mlflow_run, cfg, manifest["run_id"], manifest["date"], manifest["started_at"], cfg)
    if run_id:
        manifest["mlflow_run_id"] = run_id
        write_manifest(out_dir, manifest)
    return run_id


def _tracking(fn, cfg: Config, *args):
    """MLflow is a side channel: a tracking failure is logged, the night's output stands."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - any tracking-store problem
        log.warning("nightly MLflow logging failed (%s): %s", cfg.tracking.tracking_uri, e)
        return None


def _result(out_dir: Path, manifest: dict[str, Any], skipped: bool, reused: int = 0,
            computed: int = 0) -> NightResult:
    return NightResult(out_dir=out_dir, run_id=manifest["run_id"], skipped=skipped,
                       counts=dict(manifest.get("counts") or {}), predictions=out_dir / PREDICTIONS,
                       report=out_dir / "report.json", manifest=manifest, parts_reused=reused,
                       parts_computed=computed, parts_recomputed=list(manifest.get("parts_recomputed") or []),
                       review_files=dict((manifest.get("outputs") or {}).get("review", {})))


# ------------------------------------------------------------------- command line
def nightly_command(catalog: str | Path, out: str | Path | None = None, model: str = DEFAULT_MODEL_URI,
                    force: bool = False, config_path: str | Path | None = None,
                    previous: str | Path | None = None, image_root: str | None = None,
                    chunk_size: int | None = None, progress: bool = True, engine: str | None = None,
                    address: str | None = None, review_export: dict[str, Any] | None = None) -> NightResult:
    """What ``catalog-classifier nightly`` runs.

    With ``--config`` that file is the whole run config (catalog reading, nightly,
    tracking); without, the catalog is read the way the model's own config reads it.
    ``out`` defaults to ``nightly.out_dir/<today>``.
    """
    from ...tracking import load_model

    base = load_config(config_path)
    existing_file(catalog, "--catalog")
    if chunk_size is not None:
        at_least_one(chunk_size, "--chunk-size")
    if image_root is not None:
        existing_dir(image_root, "--image-root")
    date = dt.date.today().isoformat()
    out = usable_dir(Path(out) if out else Path(base.nightly.out_dir) / date, "--out")
    loaded = load_model(str(model), base.tracking, base.cache)  # the slow part, after the cheap checks
    if config_path is None:
        d = loaded.clf.config.to_dict()
        d.update({k: base.to_dict()[k] for k in ("tracking", "nightly", "ray", "review_export")})
        base = Config.from_dict(d)
    overrides = {"catalog": {"image_root": image_root} if image_root is not None else {},
                 "nightly": {k: v for k, v in (("chunk_size", chunk_size), ("engine", engine)) if v is not None},
                 "ray": {"address": address} if address else {},
                 "review_export": {k: v for k, v in (review_export or {}).items() if v is not None}}
    cfg = base.with_overrides(**overrides)
    check_settings(cfg.review_export)  # before the night, not after it
    return run_nightly(catalog, out, loaded, cfg, force=force, progress=progress, date=date, previous=previous)
