"""Errors of the catalog input layer."""
from __future__ import annotations


class CatalogError(ValueError):
    """A catalog file cannot be read or does not fit the item schema.

    The message always names the file or the columns at fault, so it can be shown
    to the person who supplied the catalog as is.
    """
