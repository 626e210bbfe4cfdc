"""A registry of interchangeable base models, configured by name (timm-style).

Each name maps to an estimator class; its hyperparameters come from the config's
``models: {name: {param: value}}`` mapping over the class's own ``__init__`` defaults (the
one place a default lives). ``seed`` follows ``stack.seed`` unless the mapping sets it.
"""
from __future__ import annotations

from typing import Any

_REGISTRY: dict[str, type] = {}
# the name a base model goes by in reports and reasons (evaluation records, ``why`` texts); others keep theirs
REPORT_NAMES = {"image_head": "image", "char_cnn": "text"}


def register(name: str):
    def deco(cls):
        _REGISTRY[name] = cls
        return cls
    return deco


def model_class(name: str) -> type:
    if name not in _REGISTRY:
        raise KeyError(f"unknown base model {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def check_params(models: dict[str, dict[str, Any]]) -> None:
    """Refuse unknown model names and parameters (``ValueError``, one line)."""
    for name, params in models.items():
        if name not in _REGISTRY:
            raise ValueError(f"unknown model {name!r} in config section [models]; known: {sorted(_REGISTRY)}")
        known = set(_REGISTRY[name]().get_params()) - {"classes"}
        unknown = set(params or {}) - known
        if unknown:
            raise ValueError(f"unknown parameters for model {name!r} in config section [models]: "
                             f"{sorted(unknown)}; known: {sorted(known)}")


def create(name: str, config) -> Any:
    """An unfitted estimator for base model ``name`` with the config's parameters."""
    cls = model_class(name)
    params = dict(config.models.get(name) or {})
    if "seed" in cls().get_params():
        params.setdefault("seed", config.stack.seed)
    return cls(**params)


def report_name(name: str) -> str:
    """``image_head`` -> ``image``, ``char_cnn`` -> ``text``; any other model keeps its name."""
    return REPORT_NAMES.get(name, name)


def available() -> list[str]:
    return sorted(_REGISTRY)


def classes() -> list[type]:
    """Every registered estimator class (the allow-list a saved stack may load from)."""
    return list(_REGISTRY.values())
