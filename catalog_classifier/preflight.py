"""Checks of what an operator passes (paths, sizes) before any work starts.

Each check raises ``OperatorError`` with one line naming the option and what is wrong;
the command line prints it and exits with code 2 instead of a traceback.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .errors import OperatorError


def error_line(e: BaseException) -> str:
    """The one line the command line prints for an operator error."""
    return "error: " + " ".join(str(e).split())


@contextmanager
def operator_errors():
    """Turn an operator error raised inside into one line on stderr and exit code 2 (typer commands)."""
    import typer

    from .catalog import CatalogError
    from .nightly.batch.manifest import NightlyError

    try:
        yield
    except (OperatorError, CatalogError, NightlyError, FileNotFoundError, NotADirectoryError,
            IsADirectoryError, PermissionError) as e:
        typer.secho(error_line(e), fg="red", err=True)
        raise typer.Exit(2) from None


def existing_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise OperatorError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise OperatorError(f"{what} {str(p)!r} is not a file")
    return p


def existing_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise OperatorError(f"{what} {str(p)!r} is not an existing folder")
    return p


def label_depth(value, what: str) -> int | str:
    """A label depth option: a whole number >= 1, or "leaf" (full category paths)."""
    v = str(value).strip()
    if v == "leaf":
        return v
    if v.isdigit() and int(v) >= 1:
        return int(v)
    raise OperatorError(f"{what} must be a whole number >= 1 or 'leaf', got {value!r}")


def at_least_one(value: int, what: str) -> int:
    if value < 1:
        raise OperatorError(f"{what} must be at least 1, got {value}")
    return value


def _writable_base(p: Path, what: str) -> None:
    """The nearest existing ancestor of ``p`` must be a folder this process can create entries in."""
    base = p.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OperatorError(f"{what} {str(p)!r} is under {str(base)!r}, which is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OperatorError(f"{what} {str(p)!r} cannot be created: {str(base)!r} is not writable")


def usable_dir(path: str | Path, what: str) -> Path:
    """A folder that exists and is writable, or that can be created."""
    p = Path(path).absolute()
    if p.exists():
        if not p.is_dir():
            raise OperatorError(f"{what} {str(path)!r} is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OperatorError(f"{what} {str(path)!r} is not writable")
        return Path(path)
    _writable_base(p, what)
    return Path(path)


def usable_file(path: str | Path, what: str) -> Path:
    """A file path that can be written (replaced atomically inside its folder)."""
    p = Path(path).absolute()
    if p.is_dir():
        raise OperatorError(f"{what} {str(path)!r} is a folder, not a file")
    if p.parent.exists():
        if not p.parent.is_dir():
            raise OperatorError(f"{what} {str(path)!r} is under {str(p.parent)!r}, which is a file, not a folder")
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise OperatorError(f"{what} {str(path)!r} cannot be written: {str(p.parent)!r} is not writable")
        return Path(path)
    _writable_base(p.parent, what)
    return Path(path)
