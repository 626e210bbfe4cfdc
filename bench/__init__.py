"""The benchmark (`make bench`, `python -m bench` from the repository root): quality, nightly
throughput next to the CNN's limit, scaling, training cost; see runner.py for the plan.

Not installed with the product (pyproject packages only ``catalog_classifier*`` and ``stacking*``);
it measures through the public API and the timing hook ``catalog_classifier.events``."""
