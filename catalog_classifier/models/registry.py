"""A registry of interchangeable base models, configured by name (timm-style)."""
from __future__ import annotations

from typing import Any, Callable

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str):
    def deco(builder):
        _REGISTRY[name] = builder
        return builder
    return deco


def create(name: str, config) -> Any:
    if name not in _REGISTRY:
        raise KeyError(f"unknown base model {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](config)


def available() -> list[str]:
    return sorted(_REGISTRY)
