"""What every engine shares: the one pass over the catalog that plans the pending chunks, and the
commit of a chunk's rows. An engine only decides where the pending chunks are scored."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ... import events
from ...config import Config
from .chunks import SeenIds
from .commit import committed_parts, read_part_ids, remove_stale_temps, write_part
from .manifest import Identity, NightlyError

SERVE_IMAGE_KEYS = ("cache_dir", "cache_layout", "device", "batch_size", "runtime", "precision", "export_dir")


def serving(cfg: Config) -> dict[str, dict]:
    """The run config's operational settings a served model takes over (``Config.with_overrides``
    sections): the image ones (cache dir, device, batch size, runtime) and the content caches'."""
    return {"image": {k: getattr(cfg.image, k) for k in SERVE_IMAGE_KEYS}, "cache": dataclasses.asdict(cfg.cache)}


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
    resumed run rejects exactly the duplicates an uninterrupted one would. Every engine
    reads the catalog through this one pass.
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


def commit_chunk(out_dir: Path, i: int, frame: pd.DataFrame, n_raw: int, items: pd.DataFrame) -> None:
    """Commit chunk ``i``'s part, only when it holds each of the chunk's ``n_raw`` rows once, with
    the item fields of its validated ``items`` (what the review queue shows of them)."""
    check_rows(i, frame, n_raw)
    with events.stage("nightly.write_part"):
        write_part(out_dir, i, frame, items)
