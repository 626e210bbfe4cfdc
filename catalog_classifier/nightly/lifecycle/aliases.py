"""Which model version is live: the ``champion`` alias in the MLflow registry, and its history.

MLflow keeps only where an alias points now, not where it pointed before, so every move made
here is also appended to a JSON-lines alias log (who, when, from, to, why) and stamped as tags
on the versions involved. ``rollback`` reads that log to find the previous champion.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from ...config import Config
from ...io_utils import file_lock


class LifecycleError(RuntimeError):
    """A move that cannot be made; the message says why."""


def client(cfg: Config):
    from mlflow import MlflowClient

    from ...tracking import setup

    setup(cfg.tracking)  # same store, experiment and artifact root as training
    return MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)


def alias_log_path(cfg: Config) -> Path:
    if cfg.lifecycle.alias_log:
        return Path(cfg.lifecycle.alias_log)
    loc = cfg.tracking.artifact_location
    if loc.startswith("file://"):
        loc = loc[len("file://"):]
    return Path(loc if "://" not in loc else "mlruns") / "alias_log.jsonl"


def current_champion(cfg: Config) -> int | None:
    """Version the alias points at, or None (no registered model, or alias unset)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client(cfg).get_model_version_by_alias(cfg.tracking.registered_model, cfg.lifecycle.alias)
    except MlflowException:
        return None
    return int(mv.version)


def read_alias_log(cfg: Config) -> list[dict]:
    p = alias_log_path(cfg)
    if not p.exists():
        return []
    name, alias = cfg.tracking.registered_model, cfg.lifecycle.alias
    entries = [json.loads(ln) for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [e for e in entries if e.get("model") == name and e.get("alias") == alias]


def promote(cfg: Config, version: int, reason: str = "", action: str = "promote",
            user: str | None = None) -> dict | None:
    """Point the alias at ``version`` and log the move; None when it already points there."""
    from mlflow.exceptions import MlflowException

    name, alias = cfg.tracking.registered_model, cfg.lifecycle.alias
    c = client(cfg)
    with file_lock(alias_log_path(cfg)):
        try:
            c.get_model_version(name, str(version))
        except MlflowException:
            known = sorted(int(m.version) for m in c.search_model_versions(f"name='{name}'"))
            raise LifecycleError(f"{name} has no version {version} (versions: {known or 'none'})") from None
        previous = current_champion(cfg)
        if previous == int(version):
            return None
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "user": user or _user(), "host": socket.gethostname(),
            "model": name, "alias": alias, "action": action,
            "from_version": previous, "to_version": int(version), "reason": reason or "",
        }
        c.set_registered_model_alias(name, alias, str(version))
        for key, value in (("promoted_at", entry["time"]), ("promoted_by", entry["user"]),
                           ("promoted_from", str(previous)), ("promote_reason", entry["reason"][:4000])):
            c.set_model_version_tag(name, str(version), f"{alias}.{key}", value)
        if previous is not None:
            c.set_model_version_tag(name, str(previous), f"{alias}.demoted_at", entry["time"])
        _append(alias_log_path(cfg), entry)
    return entry


def rollback(cfg: Config, reason: str = "", user: str | None = None) -> dict:
    """Move the alias back to the champion before the current one, as the alias log tells."""
    current = current_champion(cfg)
    history = champion_history(read_alias_log(cfg))
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise LifecycleError(f"no earlier {cfg.lifecycle.alias} in {alias_log_path(cfg)} to roll back to "
                             f"(current: {current})")
    entry = promote(cfg, history[-1], reason or "rollback", action="rollback", user=user)
    assert entry is not None
    return entry


def champion_history(entries: list[dict]) -> list[int]:
    """Stack of champions: a promotion pushes, a rollback pops (so two rollbacks go two steps back)."""
    stack: list[int] = []
    for e in entries:
        if e.get("action") == "rollback" and stack and stack[-1] == e.get("from_version"):
            stack.pop()
        if not stack or stack[-1] != e["to_version"]:
            stack.append(int(e["to_version"]))
    return stack


def list_versions(cfg: Config) -> list[dict]:
    """Registered versions, newest first, with aliases, recorded metrics and creation time."""
    from mlflow.exceptions import MlflowException

    name = cfg.tracking.registered_model
    c = client(cfg)
    try:
        versions = c.search_model_versions(f"name='{name}'")
        # search results leave aliases empty in some MLflow versions; the registered model has them all
        by_version: dict[str, list[str]] = {}
        for alias, ver in (c.get_registered_model(name).aliases or {}).items():
            by_version.setdefault(str(ver), []).append(alias)
    except MlflowException:
        return []
    rows = []
    for mv in sorted(versions, key=lambda m: -int(m.version)):
        tags = dict(mv.tags or {})
        rows.append({
            "version": int(mv.version),
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc).isoformat(
                timespec="seconds"),
            "aliases": sorted(set(mv.aliases or []) | set(by_version.get(str(mv.version), []))),
            "metrics": {k[len("metric."):]: float(v) for k, v in sorted(tags.items()) if k.startswith("metric.")},
            "run_id": mv.run_id, "trained_at": tags.get("trained_at"),
            "description": mv.description or "",
        })
    return rows


def format_versions(rows: list[dict], keys: tuple[str, ...] = ("macro_f1", "accuracy", "oof_macro_f1",
                                                              "oof_accuracy", "oof_coverage")) -> str:
    if not rows:
        return "no registered versions"
    shown = [k for k in keys if any(k in r["metrics"] for r in rows)]
    head = ["version", "aliases", "created", *shown]
    table = [[str(r["version"]), ",".join(r["aliases"]) or "-", r["created"],
              *[f"{r['metrics'][k]:.4f}" if k in r["metrics"] else "-" for k in shown]] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *table)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line) for line in [head, *table])


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def _append(path: Path, entry: dict) -> None:
    """One line per move, flushed to disk; the file is only ever appended to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
