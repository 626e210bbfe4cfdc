"""The cost of the SQLite cache's retention (features/cache_sqlite.py) on a lookup of N rows.

Prints one JSON object: seconds to look up N cached rows with the plain SELECT of the vectors
(what a lookup did before rows kept their last use), with the product's ``get_many`` (joined to
the dates), and ``get_many`` on the first lookup of a day (the dates written). Interleaved
repeats, medians. Vectors are random: only the storage is measured.

    .venv/bin/python scripts/measure_cache_lookup.py [--rows 27500] [--dim 1280] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np

from catalog_classifier.features.cache_sqlite import EmbeddingCache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=27500)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    cache = EmbeddingCache(tempfile.mkdtemp(), "k", a.dim)
    keys = [f"{i:064x}" for i in range(a.rows)]
    rng = np.random.default_rng(0)
    cache.put_many({k: rng.random(a.dim, dtype=np.float32) for k in keys})
    conn = cache._connection()

    def plain():
        for s in range(0, len(keys), 500):
            part = keys[s:s + 500]
            rows = conn.execute(f"SELECT sha256, vec FROM embeddings WHERE backbone = ? AND sha256 IN "
                                f"({','.join('?' * len(part))})", ["k", *part])
            {d: np.frombuffer(b, dtype=np.float32) for d, b in rows}

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    out = {"plain": [], "get_many": [], "get_many_first_of_day": []}
    for _ in range(a.repeats):
        out["plain"].append(timed(plain))
        out["get_many"].append(timed(lambda: cache.get_many(keys)))
        conn.execute("UPDATE last_used SET day = day - 1")
        out["get_many_first_of_day"].append(timed(lambda: cache.get_many(keys)))
    print(json.dumps({"rows": a.rows, "dim": a.dim, "repeats": a.repeats,
                      **{k: round(statistics.median(v), 4) for k, v in out.items()}}))


if __name__ == "__main__":
    main()
