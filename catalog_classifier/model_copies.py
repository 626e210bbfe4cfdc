"""Local copies of model versions: fetched whole or not at all, and forgotten when nobody has
loaded them for ``cache.max_idle_days``.

Two folders hold such copies (about 86 MB a version with the image backbone): the registry
versions a command loads (``cache.models_dir``, ``tracking.load_model``) and, on every node of
a Ray night, the model the driver ships to the actors (``nightly/batch/engines/ray.py``,
under the node's temp folder). Before, both kept every version ever loaded, and a download or
unpacking that failed or was killed left its half-written folder behind for good.

A copy records its last load in ``.last_used`` (the file's time). At each load the
folder is swept: copies idle ``max_idle_days`` or longer are removed, except the
``KEEP_RECENT`` most recently loaded (a champion and a challenger never go, however seldom a
night runs), and ``.tmp<pid>`` folders of processes no longer running on this machine.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

LAST_USED = ".last_used"
KEEP_RECENT = 2
# a download folder this recent is left alone even when its process is not found here (the
# folder may be shared with another machine, where the pid means nothing)
TMP_GRACE_S = 3600
_TMP = re.compile(r"\.tmp(\d+)$")
DAY_S = 86400
# a registry copy's marker: the MLflow model's descriptor (a folder named like a copy without
# its marker is not a copy, and is left alone)
MLMODEL = "MLmodel"


def use(target: Path, download: Callable[[Path], None], max_idle_days: int, marker: str = MLMODEL) -> Path:
    """``target`` (fetched first when missing) with its load recorded, and its folder swept."""
    fetch(target, download, marker)
    note_use(target)
    sweep(target.parent, max_idle_days, marker=marker)
    return target


def fetch(target: Path, download: Callable[[Path], None], marker: str = MLMODEL) -> Path:
    """``target``, downloaded by ``download(folder)`` into a private folder first and renamed,
    so a half-written copy never carries the final name; a failed download leaves nothing.
    ``marker``: the path, inside a copy, that only a whole copy has."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{target}.tmp{os.getpid()}")
    try:
        download(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process renamed its own download first
            if not (target / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # lost the race, or failed half-way
    return target


def note_use(copy: Path) -> None:
    (copy / LAST_USED).touch()


def last_used(copy: Path) -> float:
    """When the copy was last loaded (a copy from before this file existed: when it was written)."""
    stamp = copy / LAST_USED
    return (stamp if stamp.exists() else copy).stat().st_mtime


def sweep(folder: Path, max_idle_days: int, now: float | None = None, marker: str = MLMODEL) -> list[Path]:
    """Remove idle copies and dead downloads under ``folder``; returns what was removed.
    ``max_idle_days`` 0 keeps every copy (dead downloads still go)."""
    now = time.time() if now is None else now
    if not folder.is_dir():
        return []
    copies, removed = [], []
    for p in folder.iterdir():
        m = _TMP.search(p.name)
        if m and p.is_dir():
            if not _running(int(m.group(1))) and now - p.stat().st_mtime > TMP_GRACE_S:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        elif (p / marker).exists():
            copies.append((last_used(p), p))
    if max_idle_days:
        copies.sort(reverse=True)
        for _, p in copies[KEEP_RECENT:]:
            if now - last_used(p) >= max_idle_days * DAY_S:  # read again: another process may load it now
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except (OverflowError, ValueError):
        return False
    return True
