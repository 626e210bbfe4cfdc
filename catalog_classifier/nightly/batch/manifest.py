"""What a night is: input fingerprint + model identity + output-relevant config.

The manifest (``OUT/manifest.json``) is written before the first part and finalised
after the last output; a restart compares its identity with the current arguments and
either resumes (same identity), does nothing (same identity, already complete) or
refuses (different identity) unless forced.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import Config
from ...io_utils import LockBusy, atomic_write_json, exclusive_lock, file_sha256, folder_sha256s

MANIFEST = "manifest.json"
LOCK = ".nightly.lock"
FORMAT = 1


class NightlyError(RuntimeError):
    """The night cannot run as asked (other input/model in the out dir, dir in use, ...)."""


def input_fingerprint(path: str | Path) -> dict[str, Any]:
    """Size + sha256 of the whole file identify the input; path and mtime are for people.

    The whole file is hashed (a few seconds per GB, small next to the CNN) so an edit in
    the middle of a catalog is never mistaken for the same night. mtime is not compared:
    a copied or touched but identical file is the same night.
    """
    p = Path(path)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime": st.st_mtime,
            "sha256": file_sha256(p)}


def model_identity(model) -> dict[str, Any]:
    """Name/version/run id of the model plus a content hash of its saved directory.

    ``model`` is a tracking.LoadedModel or a bare CatalogClassifier (loaded from a dir).
    The content hash catches a different model saved to the same path or cache name (each
    file's hash is memoised by path, size and mtime: a rewritten file is hashed again).
    """
    clf = getattr(model, "clf", model)
    model_dir = getattr(clf, "model_dir_", None)
    ident = {
        "name": getattr(model, "name", None) or (Path(model_dir).name if model_dir else "catalog-classifier"),
        "version": getattr(model, "version", None),
        "run_id": getattr(model, "run_id", None),
        "source": getattr(model, "source", None) or (str(model_dir) if model_dir else None),
    }
    if model_dir is not None and Path(model_dir).is_dir():
        h = hashlib.sha256()
        for rel, sha in folder_sha256s(model_dir):
            h.update(rel.encode() + b"\0" + sha.encode())
        ident["fingerprint"] = h.hexdigest()
    else:  # an in-memory model: its label set and thresholds are the best identity we have
        thr = [None if t == float("inf") else float(t) for t in clf.stack_.thresholds_]
        ident["fingerprint"] = _hash({"labels": list(clf.labels_), "thresholds": thr})
    return ident


def config_identity(cfg: Config) -> dict[str, Any]:
    """The config values that change a night's output (catalog reading, chunking, queue, drift).

    Operational knobs (cache dir, device, tracking) are left out: they never change a row.
    """
    n = cfg.nightly
    return {"catalog": json.loads(json.dumps(cfg.to_dict()["catalog"], default=str)),
            "chunk_size": n.chunk_size, "audit_rate": n.audit_rate, "audit_seed": n.audit_seed,
            "drift_alpha": n.drift_alpha}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Identity:
    input: dict[str, Any]
    model: dict[str, Any]
    config: dict[str, Any]

    @property
    def config_hash(self) -> str:
        return _hash(self.config)

    @property
    def run_id(self) -> str:
        """Deterministic: the same input, model and config always give the same night id."""
        key = {"input": [self.input["size"], self.input["sha256"]],
               "model": [self.model.get(k) for k in ("name", "version", "run_id", "fingerprint")],
               "config": self.config_hash}
        return "night-" + _hash(key)[:16]

    def differences(self, manifest: dict[str, Any]) -> list[str]:
        """Human-readable reasons this identity is not the one recorded in ``manifest``."""
        out = []
        old_in = manifest.get("input", {})
        if (old_in.get("size"), old_in.get("sha256")) != (self.input["size"], self.input["sha256"]):
            out.append(f"input differs: the night was run on {old_in.get('path')} "
                       f"(size {old_in.get('size')}, sha256 {str(old_in.get('sha256'))[:12]}), this input is "
                       f"{self.input['path']} (size {self.input['size']}, sha256 {self.input['sha256'][:12]})")
        old_m = manifest.get("model", {})
        keys = ("name", "version", "run_id", "fingerprint")
        if [old_m.get(k) for k in keys] != [self.model.get(k) for k in keys]:
            out.append(f"model differs: the night used {_model_str(old_m)}, this model is {_model_str(self.model)}")
        old_c = manifest.get("config", {})
        changed = sorted(k for k in set(old_c) | set(self.config) if old_c.get(k) != self.config.get(k))
        if changed:
            out.append(f"config differs in {changed}")
        return out


def _model_str(m: dict[str, Any]) -> str:
    return (f"{m.get('name')} version {m.get('version')} (run {m.get('run_id')}, "
            f"content {str(m.get('fingerprint'))[:12]}, from {m.get('source')})")


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    p = out_dir / MANIFEST
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:  # only a hand edit can do this: writes are atomic
        raise NightlyError(f"{p} is not valid JSON ({e}); fix it or re-run with --force") from e


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    return atomic_write_json({"format": FORMAT, **manifest}, out_dir / MANIFEST)


def new_manifest(ident: Identity, catalog: str, date: str, started_at: str) -> dict[str, Any]:
    return {"status": "running", "run_id": ident.run_id, "date": date, "catalog": catalog,
            "input": ident.input, "model": ident.model, "config": ident.config,
            "config_hash": ident.config_hash, "started_at": started_at}


@contextmanager
def night_lock(out_dir: Path):
    """One run per night dir: an exclusive lock on OUT/.nightly.lock, refused (not waited on) when held."""
    try:
        with exclusive_lock(out_dir / LOCK, wait=False):
            yield
    except LockBusy:
        raise NightlyError(f"another nightly run is using {out_dir} (lock {out_dir / LOCK})") from None
