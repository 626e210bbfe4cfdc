"""The local engine: this process scores the pending chunks one after another."""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from ....config import Config
from ..chunks import chunk_rows
from ..manifest import Identity
from ..plan import ChunkPlan, commit_chunk, model_stamp, plan_chunks


class LocalEngine:
    def run_chunks(self, stream, out_dir: Path, clf, ident: Identity, cfg: Config, progress: bool):
        stamp, plan, computed = model_stamp(ident), ChunkPlan(), 0
        with tqdm(total=stream.estimate_chunks(), unit="chunk", desc=f"nightly {out_dir.name}",
                  disable=not progress) as bar:
            for i, raw, items, rejected in plan_chunks(stream, out_dir, plan):
                frame = chunk_rows(clf, items, rejected, cfg.catalog.image_root, stamp)
                commit_chunk(out_dir, i, frame, len(raw), items)
                computed += 1
                bar.set_postfix(rows=plan.n_rows, refresh=False)
                bar.update(plan.n_chunks - bar.n)  # committed parts passed over count as done
        return plan.reused, computed, plan.n_chunks, plan.n_rows
