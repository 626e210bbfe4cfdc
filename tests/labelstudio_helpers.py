"""Test helpers: a real Label Studio in its own virtual environment, started on 127.0.0.1.

The environment is cached outside the clone (``~/.cache/catalog-classifier/label-studio-<ver>``,
or under ``$CATALOG_CLASSIFIER_CACHE``). It counts as installed only once its ``.complete``
marker exists, written after ``pip install`` succeeded; an install killed half-way leaves no
marker and is wiped and redone by the next run. A file lock keeps two runs from installing at once.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

LABEL_STUDIO_VERSION = "1.23.2"
INSTALL_TIMEOUT_S = 1500
START_TIMEOUT_S = 480


def cache_dir() -> Path:
    base = os.environ.get("CATALOG_CLASSIFIER_CACHE") or Path.home() / ".cache" / "catalog-classifier"
    return Path(base)


def ensure_label_studio(version: str = LABEL_STUDIO_VERSION) -> Path:
    """Python of a venv holding ``label-studio==version``; installs it on first use. Raises on failure."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    env_dir = root / f"label-studio-{version}"
    python = env_dir / "bin" / "python"
    marker = env_dir / ".complete"
    with open(root / f".label-studio-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and python.exists():
            return python
        shutil.rmtree(env_dir, ignore_errors=True)  # a killed install: start over
        subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"label-studio=={version}"],
                       check=True, timeout=INSTALL_TIMEOUT_S)
        out = subprocess.run([str(python), "-c", "import label_studio; print(label_studio.__version__)"],
                             check=True, timeout=300, capture_output=True, text=True).stdout.strip()
        if out != version:
            raise RuntimeError(f"label-studio {out!r} installed, {version} wanted")
        marker.write_text(version + "\n")
        return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def label_studio_server(python: Path, data_dir: Path, document_root: Path, *,
                        username: str = "reviewer@example.com", password: str = "reviewer-pass-123",
                        token: str = "catalogclassifiertesttoken0123456789ab"):
    """Run Label Studio with local-files serving under ``document_root``; yields (base_url, token).

    The server is always stopped on exit (terminate, then kill)."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))}
    env.update({
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": username, "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
    })
    log = open(data_dir / "server.log", "wb")
    proc = subprocess.Popen(
        [str(python), "-m", "label_studio.server", "start", "--no-browser", "--internal-host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(data_dir), "--username", username, "--password", password,
         "--user-token", token],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, token, data_dir / "server.log")
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def _wait_ready(proc, base: str, token: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"label-studio exited {proc.returncode}:\n{_tail(log_path)}")
        try:
            r = requests.get(f"{base}/api/projects", headers=auth(token), timeout=5)
            if r.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(2)
    raise RuntimeError(f"label-studio not ready after {START_TIMEOUT_S}s:\n{_tail(log_path)}")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def auth(token: str) -> dict:
    return {"Authorization": f"Token {token}"}
