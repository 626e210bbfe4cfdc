"""Value-level cleaning shared by the adapters and the validator."""
from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from .schema import CATEGORY_SEP

MAX_PRICE = 1e8  # above this a "price" is a parsing accident (an EAN, a phone number)

MAX_RAW_CHARS = 1000  # bound on the copy of a broken record kept in the output

# C0/C1 control characters except tab and newline; lone UTF-16 surrogates
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_CATEGORY_SPLIT = re.compile(r"\s*>+\s*")
_SPACES = re.compile(r"\s+")


def is_missing(v: Any) -> bool:
    """None, NaN/NaT/pd.NA, or a string that is empty or only whitespace."""
    if v is None:
        return True
    if isinstance(v, str):
        return not v.strip()
    try:
        return bool(v != v)  # NaN, NaT
    except (TypeError, ValueError):  # pd.NA and array-likes
        return v is pd.NA


def clean_text(v: Any, max_chars: int | None = None) -> str:
    """The one text normalisation: valid Unicode, NFKC, control characters as spaces, strip, cap.

    Missing values give "". Lone UTF-16 surrogates (half an emoji in crawled JSON) become
    U+FFFD so every later step can encode the text; NUL and the other control characters
    except newline (CR, CRLF -> LF) and tab become a space, never nothing, so ``Bath\\x00Towel`` reads as two
    words. NFKC folds full-width letters and compatibility forms, so the same product crawled
    from two shops reads the same. ``features.text.normalize_text`` builds on this.
    """
    if is_missing(v):
        return ""
    s = str(v)
    if not s.isascii():
        s = unicodedata.normalize("NFKC", _SURROGATE.sub("\ufffd", s))
    if "\r" in s:  # a CR or CRLF is a line break, like LF
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    s = _CONTROL.sub(" ", s).strip()
    if max_chars is not None and len(s) > max_chars:
        s = s[:max_chars].rstrip()
    return s


# Flipkart's product_specifications is a Ruby hash dump: {"key"=>"Type", "value"=>"Analog"}
_RUBY_PAIR = re.compile(r'"key"\s*=>\s*"((?:[^"\\]|\\.)*)"\s*,\s*"value"\s*=>\s*"((?:[^"\\]|\\.)*)"')
_LINE_BREAK = re.compile(r"[\r\n]+")
SPECS_PARSE_CHARS = 200_000  # a crawled attribute list is cut here before it is parsed


def clean_specs(v: Any, max_chars: int | None = None) -> str:
    """An attribute list as crawled -> the canonical ``specs`` text: one ``key: value`` per line,
    cleaned like any text (``clean_text``) and capped.

    Read: a JSON object ({"Color": "Red"}), a JSON list of {"key": ..., "value": ...} objects,
    Flipkart's Ruby hash dump ({"key"=>"Color", "value"=>"Red"}), or text already in lines
    (kept as it is). A key loses its colons and line breaks, a value its line breaks; pairs
    without a key are dropped. Never raises: anything else is kept as text."""
    if is_missing(v):
        return ""
    s = str(v).strip()[:SPECS_PARSE_CHARS]
    pairs = None
    if s[:1] in "{[":
        try:
            pairs = _json_pairs(json.loads(s))
        except (ValueError, RecursionError):
            pairs = None
        if pairs is None and "=>" in s:
            pairs = [(k.replace('\\"', '"'), x.replace('\\"', '"')) for k, x in _RUBY_PAIR.findall(s)]
    if pairs is None:
        return clean_text(s, max_chars)
    lines = []
    for k, x in pairs:
        key = _LINE_BREAK.sub(" ", str(k)).replace(":", " ").strip()
        if key:
            lines.append(f"{key}: {'' if x is None else _LINE_BREAK.sub(' ', str(x)).strip()}")
    return clean_text("\n".join(lines), max_chars)


def _json_pairs(parsed: Any) -> list[tuple[Any, Any]] | None:
    if isinstance(parsed, dict):
        inner = parsed.get("product_specification")  # Flipkart's shape, had it been JSON
        if isinstance(inner, (list, dict)) and len(parsed) == 1:
            return _json_pairs(inner if isinstance(inner, list) else [inner])
        return [(k, x) for k, x in parsed.items() if not isinstance(x, (dict, list))]
    if isinstance(parsed, list):
        return [(e.get("key"), e.get("value", "")) for e in parsed if isinstance(e, dict) and e.get("key")]
    return None


def title_key(title: Any) -> str:
    """The near-duplicate key: NFKC, case-folded, letters only (digits, sizes, punctuation dropped).

    The one rule for "the same listing": training folds group by it (so copies never sit on both
    sides of a fold), the review queue counts copies by it and retraining keeps them out of the
    holdout. Non-text gives "".
    """
    if not isinstance(title, str):
        return ""
    return "".join(ch for ch in unicodedata.normalize("NFKC", title).casefold() if ch.isalpha())


def has_surrogate(s: str) -> bool:
    return not s.isascii() and _SURROGATE.search(s) is not None


def bounded_raw(s: Any, max_chars: int = MAX_RAW_CHARS) -> str | None:
    """A copy of raw input safe to store: lone surrogates and NUL escaped (``\\ud83d``, ``\\x00``),
    at most max_chars."""
    if s is None:
        return None
    s = str(s)[: max_chars]
    if has_surrogate(s):
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s.replace("\x00", "\\x00")[:max_chars]


def clean_optional(v: Any, max_chars: int | None = None) -> str | None:
    """clean_text, but an empty result is None (brand, currency, url)."""
    s = clean_text(v, max_chars)
    return s or None


def parse_price(v: Any) -> float:
    """A usable positive price, or NaN.

    Accepts numbers and strings such as "1,299.00", "Rs. 899", "₹ 1,299", "INR 45.5".
    Negative, zero, non-finite, unparseable or absurd (> MAX_PRICE) values give NaN.
    """
    if is_missing(v) or isinstance(v, bool):
        return math.nan
    if isinstance(v, (int, float)):
        x = float(v)
    else:
        s = unicodedata.normalize("NFKC", str(v)).replace(",", "").replace("\u00a0", "").strip()
        try:
            x = float(s)
        except ValueError:
            m = _NUMBER.search(s)
            if m is None:
                return math.nan
            x = float(m.group())
    if not math.isfinite(x) or x <= 0 or x > MAX_PRICE:
        return math.nan
    return x


def clean_category(v: Any) -> str | None:
    """Normalise a category path: parts split on '>' or '>>', whitespace collapsed, joined by ' > '."""
    s = clean_text(v)
    if not s:
        return None
    parts = [_SPACES.sub(" ", p).strip() for p in _CATEGORY_SPLIT.split(s)]
    parts = [p for p in parts if p]
    return CATEGORY_SEP.join(parts) or None


def domain_from_url(url: Any) -> str | None:
    """Host of a URL, lower-case, without "www." and port; None when there is none."""
    if is_missing(url):
        return None
    s = str(url).strip()
    if "://" not in s and not s.startswith("//"):
        s = "//" + s  # "shop.example/p/1" has no scheme; urlsplit needs // to see a host
    try:
        host = urlsplit(s).hostname
    except ValueError:
        return None
    return clean_domain(host)


def clean_domain(v: Any) -> str | None:
    s = clean_text(v).lower()
    if s.startswith("www."):
        s = s[4:]
    return s.rstrip(".") or None


def object_series(values, index=None, name=None) -> pd.Series:
    """An object-dtype Series with None for every missing value.

    pandas 3 infers its "str" dtype (NaN for missing) from string data, e.g. in
    Series.map; the item table keeps plain objects so None stays None.
    """
    if isinstance(values, pd.Series):
        index = values.index if index is None else index
        name = values.name if name is None else name
        values = values.tolist()
    vals = [None if (v is None or (not isinstance(v, str) and is_missing(v))) else v for v in values]
    return pd.Series(vals, index=index, name=name, dtype=object)
