"""The nightly job on Ray Data (``nightly --engine ray``): same chunks, same parts, actors.

    driver     read, validate and de-duplicate the catalog chunk by chunk (plan.plan_chunks,
               the local engine's own pass); each pending chunk's items go to the object
               store as one block, ``ray.window_chunks`` chunks at a time (one Ray Data run
               per window, so the object store holds one window and parts commit before
               the whole catalog has been read)
    Ray Data   CNN actors (image decode + backbone; a GPU each when the cluster has GPUs)
               -> CPU actors (char-CNN and other base models, meta-classifier, thresholds,
               rules); every actor loads the model once, from a copy shipped through the
               object store, so workers need no access to the driver's model folder
    driver     gathers each chunk's rows and commits its part with the local engine's
               atomic write; merge, report and review queue are the local engine's

Exactly once: only the driver commits, and a part is written only when it holds every row
of its chunk once, so an actor that dies mid-batch (Ray restarts it and retries the batch)
can neither add nor drop a row. A driver crash leaves whole parts only; the re-run (on
either engine) resumes at the first missing one.
"""
from __future__ import annotations

import functools
import io
import logging
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .... import model_copies
from ....config import Config
from ..chunks import assemble_rows, score_items
from ..commit import ITEM_FIELDS
from ..manifest import NightlyError
from ..plan import ChunkPlan, commit_chunk, model_stamp, plan_chunks, serving

log = logging.getLogger(__name__)
CHUNK, EMB, IMG_ISSUE = "_chunk", "_embedding", "_image_issue"
UNPACKED = "model/stack/stack.json"  # in a node's copy of the model: the unpacking finished
_FORWARD_ENV = ("CATALOG_CLASSIFIER_THREADS", "CATALOG_CLASSIFIER_LOG")


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise NightlyError("--engine ray needs Ray Data: pip install 'catalog-classifier[ray]'") from e
    return ray


def pack_model(model_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(model_dir), arcname="model")
    return buf.getvalue()


def _unpack_model(blob: bytes, max_idle_days: int) -> Path:
    """The model folder on this node, unpacked once per model content (actors and nights share
    it); copies no actor has loaded for ``max_idle_days`` go (``model_copies``)."""
    import hashlib

    def unpack(dst: Path) -> None:
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(dst, filter="data")

    root = Path(tempfile.gettempdir()) / "catalog-classifier-models"
    target = root / hashlib.sha256(blob).hexdigest()[:24]
    return model_copies.use(target, unpack, max_idle_days, marker=UNPACKED) / "model"


class _Actor:
    """Loads the model once per actor; serving settings as the driver's run config has them."""

    def __init__(self, model_blob: bytes, serve: dict, image_root: str | None, threads: float):
        import torch

        from ....classifier import CatalogClassifier

        torch.set_num_threads(max(1, int(threads)))
        if not isinstance(model_blob, bytes):  # an ObjectRef: fetched once per actor
            import ray

            model_blob = ray.get(model_blob)
        self.clf = CatalogClassifier.load(_unpack_model(model_blob, serve["cache"]["max_idle_days"]))
        self.clf.config = self.clf.config.with_overrides(**serve)
        self.image_root = image_root

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.process(batch)


class EmbedActor(_Actor):
    """Image decode + CNN embedding (through the shared embedding cache)."""

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        items = batch.reset_index(drop=True)
        vectors, reasons = self.clf.embed_images(items, self.image_root)
        out = items.copy()
        out[EMB] = None if vectors is None else [np.ascontiguousarray(v, np.float32).tobytes() for v in vectors]
        out[IMG_ISSUE] = list(reasons)
        return out


class ScoreActor(_Actor):
    """Text base models, meta-classifier, thresholds and rules on CPU."""

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        items = batch.drop(columns=[c for c in (CHUNK, EMB, IMG_ISSUE) if c in batch]).reset_index(drop=True)
        vectors = reasons = None
        if EMB in batch and batch[EMB].notna().all():
            vectors = np.stack([np.frombuffer(b, dtype=np.float32) for b in batch[EMB]])
            reasons = [None if pd.isna(r) else r for r in batch[IMG_ISSUE]]
        pred = score_items(self.clf, items, self.image_root, embeddings=vectors, image_reasons=reasons)
        pred[CHUNK] = batch[CHUNK].to_numpy()
        return pred


def connect(cfg: Config):
    """Join ``ray.address`` or start a local instance; returns (ray, started_here)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    env = {k: os.environ[k] for k in _FORWARD_ENV if k in os.environ}
    kwargs = {"runtime_env": {"env_vars": env}} if env else {}
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=False, **kwargs)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False, **kwargs)
    return ray, True


def _local(path: str | None) -> str | None:
    """Relative local paths are made absolute: workers do not share the driver's cwd."""
    if not path or "://" in path:
        return path
    return str(Path(path).resolve())


class RayEngine:
    def run_chunks(self, stream, out_dir: Path, clf, ident, cfg: Config, progress: bool):
        return run_chunks_ray(stream, out_dir, clf, ident, cfg, progress)


def run_chunks_ray(stream, out_dir: Path, clf, ident, cfg: Config, progress: bool):
    """The pending chunks scored on Ray Data; returns (reused, computed, n_chunks, n_rows)."""
    ray, started = connect(cfg)
    try:
        plan = ChunkPlan()
        with tqdm(unit="chunk", desc=f"nightly {out_dir.name} (ray)", disable=not progress) as bar:
            night = _Windows(ray, out_dir, clf, cfg, model_stamp(ident), bar)
            for i, raw, items, rejected in plan_chunks(stream, out_dir, plan):
                if len(items) == 0:  # nothing to predict: commit the rejections now
                    night.commit(i, None, rejected, len(raw), items)
                else:
                    night.add(i, items, rejected, len(raw))
            night.flush()
        return plan.reused, night.committed, plan.n_chunks, plan.n_rows
    finally:
        if started:
            ray.shutdown()


class _Windows:
    """The driver's side of a Ray night: chunks go to Ray ``ray.window_chunks`` at a time (one
    Ray Data run per window) and only this object commits parts."""

    def __init__(self, ray, out_dir: Path, clf, cfg: Config, stamp, bar):
        self.ray, self.out_dir, self.clf, self.cfg, self.stamp, self.bar = ray, out_dir, clf, cfg, stamp, bar
        self.size = max(1, int(cfg.ray.window_chunks))
        self.refs: list = []
        # chunk -> (rejected, raw rows, items, the items' row and ITEM_FIELDS)
        self.pending: dict[int, tuple[pd.DataFrame, int, int, pd.DataFrame]] = {}
        self.windows = self.committed = 0

    def commit(self, i: int, scored: pd.DataFrame | None, rejected: pd.DataFrame, n_raw: int,
               items: pd.DataFrame) -> None:
        commit_chunk(self.out_dir, i, assemble_rows(scored, rejected, self.stamp), n_raw, items)
        self.committed += 1
        self.bar.update(1)

    def add(self, i: int, items: pd.DataFrame, rejected: pd.DataFrame, n_raw: int) -> None:
        self.pending[i] = (rejected, n_raw, len(items), items.reindex(columns=["row", *ITEM_FIELDS]))
        self.refs.append(self.ray.put(items.assign(**{CHUNK: i})))
        if len(self.refs) == self.size:
            self.flush()

    def flush(self) -> None:
        """Score the window gathered so far and commit its parts."""
        if not self.refs:
            return
        log.info("ray window %d: chunks %d-%d (%d)", self.windows, min(self.pending), max(self.pending),
                 len(self.pending))
        self._score(self._dataset(self.ray.data.from_pandas_refs(self.refs)))
        self.refs, self.pending, self.windows = [], {}, self.windows + 1

    @functools.cached_property
    def actor_args(self) -> dict:
        """What every actor is built from; the model is packed and put in the object store once."""
        serve = serving(self.cfg)
        serve["image"]["cache_dir"] = _local(self.cfg.image.cache_dir)
        serve["cache"]["base_probas_dir"] = _local(self.cfg.cache.base_probas_dir)
        return {"model_blob": self.ray.put(pack_model(Path(self.clf.model_dir_))), "serve": serve,
                "image_root": _local(self.cfg.catalog.image_root), "threads": self.cfg.ray.cpus_per_actor}

    @functools.cached_property
    def image_gpus(self) -> float:
        gpus = self.cfg.ray.image_num_gpus
        return gpus if gpus is not None else (1 if self.ray.cluster_resources().get("GPU", 0) > 0 else 0)

    def _dataset(self, ds):
        from ray.data import ActorPoolStrategy, DataContext

        rc, args = self.cfg.ray, self.actor_args
        DataContext.get_current().enable_progress_bars = False
        if self.clf.config.image.enabled and "image_head" in self.clf.base_names:
            gpus = self.image_gpus
            ds = ds.map_batches(EmbedActor, fn_constructor_kwargs=args, batch_format="pandas",
                                batch_size=rc.gpu_batch_size if gpus else None,
                                compute=ActorPoolStrategy(size=rc.image_actors),
                                num_cpus=rc.cpus_per_actor, num_gpus=gpus)
        return ds.map_batches(ScoreActor, fn_constructor_kwargs=args, batch_format="pandas", batch_size=None,
                              compute=ActorPoolStrategy(size=rc.score_actors), num_cpus=rc.cpus_per_actor)

    def _score(self, ds) -> None:
        """Commit each chunk's part once it holds all its rows; a retried batch adds nothing."""
        got: dict[int, list[pd.DataFrame]] = {}
        n_got: dict[int, set] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for i, rows in batch.groupby(CHUNK, sort=False):
                i = int(i)
                fresh = rows[~rows["row"].isin(n_got.setdefault(i, set()))]
                n_got[i].update(fresh["row"].tolist())
                got.setdefault(i, []).append(fresh.drop(columns=[CHUNK]))
                rejected, n_raw, n_items, fields = self.pending[i]
                if len(n_got[i]) == n_items:
                    self.commit(i, pd.concat(got.pop(i), ignore_index=True), rejected, n_raw, fields)
        missing = sorted(i for i, (_, _, n_items, _) in self.pending.items() if len(n_got.get(i, ())) != n_items)
        if missing:
            raise RuntimeError(f"Ray returned no rows for chunks {missing[:10]}; re-run to resume")
