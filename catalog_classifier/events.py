"""Stage timings for whoever asks: ``subscribe(callback)`` and the product reports
``callback(stage, seconds, info)`` at the end of each stage it brackets with ``stage(...)``.

The benchmark (top-level ``bench/``) reads its stage times from here instead of patching
product functions. ``info`` holds what the call site passed (e.g. ``model="char_cnn"``) plus
``depth`` (stages still open on the same thread when this one started: 0 = outermost) and
``thread`` (its name), so a listener can turn nested times into exclusive ones. Stages are
delivered in the order they end, a nested one before the stage around it.

With no listener, ``stage`` returns one shared do-nothing context manager: no clock is read
and nothing is allocated, so the calls can stay on hot paths.

Stage names used by the product (``area.what``): ``fit.inputs``, ``fit.base`` (model=),
``fit.stack`` (the whole stack fit, ``fit.base`` nested), ``fit.rules``; ``predict.inputs``,
``predict.base`` (model=), ``predict.meta``, ``predict.route``, ``predict.explain``; ``image.embed``,
``image.load``, ``image.forward``, ``image.cache``; ``cache.prune`` (file=); ``nightly.write_part``, ``nightly.merge``,
``nightly.drift``, ``nightly.queue``, ``nightly.report``.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

Listener = Callable[[str, float, dict[str, Any]], None]

_listeners: list[Listener] = []
_lock = threading.Lock()
_open = threading.local()  # per-thread count of stages in progress
_IDLE = nullcontext()


def subscribe(callback: Listener) -> Callable[[], None]:
    """Deliver every finished stage to ``callback``; returns the function that stops it."""
    with _lock:
        _listeners.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _listeners:
                _listeners.remove(callback)
    return unsubscribe


@contextmanager
def listening(callback: Listener) -> Iterator[Listener]:
    """``subscribe`` for the duration of a ``with`` block."""
    stop = subscribe(callback)
    try:
        yield callback
    finally:
        stop()


def stage(name: str, **info: Any):
    """Context manager timing one stage (wall seconds, ``time.perf_counter``)."""
    if not _listeners:
        return _IDLE
    return _timed(name, info)


@contextmanager
def _timed(name: str, info: dict[str, Any]) -> Iterator[None]:
    depth = getattr(_open, "n", 0)
    _open.n = depth + 1
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - t0
        _open.n = depth
        emit(name, seconds, **info, depth=depth, thread=threading.current_thread().name)


def emit(name: str, seconds: float, **info: Any) -> None:
    """Deliver a stage timed elsewhere (e.g. by another process) to every listener."""
    for callback in list(_listeners):
        callback(name, seconds, info)
