"""The benchmark (`make bench`, `catalog-classifier bench`): quality, nightly throughput next to
the CNN's limit, scaling, training cost; see runner.py for the plan and README of bench/."""
