"""Engines score the pending chunks of a night; chosen by name (``nightly.engine`` / ``--engine``).

Every engine reads the catalog through ``plan.plan_chunks`` and commits through
``plan.commit_chunk``, so the exactly-once rules are written once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ....config import Config
from ..manifest import Identity, NightlyError


class Engine(Protocol):
    def run_chunks(self, stream, out_dir: Path, clf, ident: Identity, cfg: Config,
                   progress: bool) -> tuple[int, int, int, int]:
        """Commit a part per chunk not yet committed; returns (reused, computed, n_chunks, n_rows)."""


def _local() -> Engine:
    from .local import LocalEngine

    return LocalEngine()


def _ray() -> Engine:
    from .ray import RayEngine

    return RayEngine()


ENGINES = {"local": _local, "ray": _ray}


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise NightlyError(f"unknown engine {name!r}: use " + " or ".join(repr(n) for n in ENGINES))
    return ENGINES[name]()
