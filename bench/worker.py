"""Each benchmark measurement runs in a fresh child process.

That gives every figure its own peak RSS (``os.wait4`` returns the rusage of exactly that
child) and keeps one section's memory, imports and warm caches from leaking into the next.

    python -m bench.worker TASK SPEC.json RESULT.json      (from the repository root)
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from catalog_classifier.io_utils import atomic_write_text


class BenchError(RuntimeError):
    pass


ROOT = Path(__file__).resolve().parents[1]  # the repository root: `python -m bench.worker` runs from here


@dataclass
class Spawner:
    """Runs measurements in child processes and keeps the tallies of one benchmark run."""

    reuse: bool = False  # `bench --resume`: keep finished measurements with identical specs
    cpu_seconds: float = 0.0  # CPU time of all measuring processes so far (a load-independent cost proxy)

    def spawn(self, task: str, spec: dict, work: Path, name: str, timeout_s: float | None = None) -> dict:
        """Run TASK(spec) in a child process; its result plus process wall time and peak RSS."""
        work.mkdir(parents=True, exist_ok=True)
        spec_path, res_path, log_path = (work / f"{name}.{ext}" for ext in ("spec.json", "result.json", "log"))
        done = work / f"{name}.done.json"
        if self.reuse and done.exists():  # --resume: a finished measurement with the same spec is kept
            old = json.loads(done.read_text())
            if old.get("spec") == spec:
                self.cpu_seconds += old["result"].get("process_cpu_s", 0.0)
                return {**old["result"], "reused": True}
        spec_path.write_text(json.dumps(spec, indent=1))
        res_path.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.worker", task, str(spec_path), str(res_path)]
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if code != 0 or not res_path.exists():
            tail = log_path.read_text(errors="replace")[-3000:]
            why = "timed out" if timeout_s is not None and wall > timeout_s else f"exit {code}"
            raise BenchError(f"benchmark task {name} ({task}) failed: {why}; log {log_path}:\n{tail}")
        res = json.loads(res_path.read_text())
        res["process_wall_s"] = round(wall, 2)
        res["process_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
        res["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
        self.cpu_seconds += usage.ru_utime + usage.ru_stime
        # atomic: a --resume after a kill must never read half a marker
        atomic_write_text(json.dumps({"spec": spec, "result": res}, indent=1), done)
        return res


def _tasks():
    from . import engines, quality, scaling, taxonomy, throughput

    return {"quality": quality.run, "throughput": throughput.run, "nightly": scaling.run_once,
            "engines": engines.run, "taxonomy": taxonomy.run_once}


def main(argv: list[str]) -> int:
    task, spec_path, res_path = argv
    from .machine import peak_rss_mb

    progress = logging.getLogger("catalog_classifier")  # the fit's progress lines go to the worker's log
    progress.setLevel(logging.INFO)
    progress.addHandler(logging.StreamHandler(sys.stdout))
    spec = json.loads(Path(spec_path).read_text())
    res = _tasks()[task](spec)
    res["worker_peak_rss_mb"] = peak_rss_mb()
    tmp = Path(res_path + ".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.rename(res_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
