"""The error an operator's own mistake raises (kept free of imports so any module can raise it)."""
from __future__ import annotations


class OperatorError(ValueError):
    """An argument the operator gave cannot work (missing file, unusable folder, bad number, bad config value)."""
