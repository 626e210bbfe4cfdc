"""Warm nightly throughput of one source tree (the current directory), for comparing commits side by side.

    cd TREE && python scripts/warm_night_of_tree.py train OUT   # once: a fast-config model of that tree
    cd TREE && python scripts/warm_night_of_tree.py night OUT   # one warm-up night, then one timed warm night

Run the `night` step of several trees interleaved (old, new, old, new, ...) and compare medians
(``seconds``: wall time of the timed night; ``cpu_s``: this process's CPU seconds during it).
The script may be run from another tree's checkout (``cd OLD && python NEW/scripts/...``): it
imports the code of the current directory.
"""
import json, os, sys, time
from pathlib import Path
tree = Path.cwd()
sys.path[:0] = [str(tree), str(tree / "tests")]
from conftest import DEMO_CSV, fast_config  # the tree's own fast settings
out = Path(sys.argv[2])
cfg = fast_config(tracking={"enabled": False}, nightly={"chunk_size": 256})
if sys.argv[1] == "train":
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.classifier import CatalogClassifier
    cat = read_catalog(DEMO_CSV, cfg.catalog)
    CatalogClassifier(cfg).fit(cat.items, image_root=cat.image_root, progress=False).save(out / "model")
    print("trained", file=sys.stderr)
else:
    try:
        from catalog_classifier.nightly.runner import run_nightly
    except ImportError:
        from catalog_classifier.nightly.batch.job import run_nightly
    from catalog_classifier.classifier import CatalogClassifier
    clf = CatalogClassifier.load(out / "model")
    run_nightly(DEMO_CSV, out / "night0", clf, cfg, force=True, progress=False)  # warms caches + runtime
    t, c = time.perf_counter(), time.process_time()
    res = run_nightly(DEMO_CSV, out / "night", clf, cfg, force=True, progress=False)
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    print(json.dumps({"tree": str(tree), "rows": sum(res.counts.values()), "seconds": dt, "cpu_s": cpu,
                      "items_per_s": sum(res.counts.values()) / dt}))
