"""Library versions recorded with every model version (training/serving must agree)."""
from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = ("catalog-classifier", "torch", "torchvision", "lightgbm", "scikit-learn", "sentencepiece",
             "numpy", "pandas", "scipy", "mlflow", "timm", "pillow")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out
