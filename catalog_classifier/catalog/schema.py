"""The one documented item schema every catalog is read into.

| column      | type         | required | meaning                                                     |
|-------------|--------------|----------|-------------------------------------------------------------|
| item_id     | str          | yes      | unique id of the listing within the catalog                 |
| title       | str          | yes      | product name as crawled                                     |
| description | str          | no       | free text, spec lists; "" when absent                       |
| brand       | str or None  | no       | brand as crawled; None when unknown                         |
| price       | float or NaN | no       | selling price; NaN when absent or unusable                  |
| currency    | str or None  | no       | ISO code when known                                         |
| domain      | str or None  | no       | shop domain (taken from `url` when only a URL is given)     |
| url         | str or None  | no       | product page URL                                            |
| image       | str or None  | no       | image path (relative to the image root) or URI              |
| category    | str or None  | no       | label: category path joined by " > " (training/eval only)   |
| specs       | str          | no       | attribute list, one `key: value` per line; "" when absent   |

``specs`` is read from a JSON object, a JSON list of ``{"key", "value"}`` objects, Flipkart's
``{"key"=>..., "value"=>...}`` dump, or lines already in that form (``cleaning.clean_specs``).
"""
from __future__ import annotations

CATEGORY_SEP = " > "

REQUIRED_COLUMNS: tuple[str, ...] = ("item_id", "title")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "description", "brand", "price", "currency", "domain", "url", "image", "category", "specs",
)
ITEM_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# columns of the rejected-rows table: ``lines`` are the physical lines of the record in the
# file ("12" or "12-14"; None for Parquet), ``raw`` a bounded copy of a broken record's text
REJECT_COLUMNS: tuple[str, ...] = ("item_id", "row", "reason", "lines", "raw")
