"""Listing text -> normalised characters -> integer sequences for the char-CNN.

Listings are spec lists, brand codes, emoji and mixed scripts: the catalog's one cleaning
(``catalog.cleaning.clean_text``: valid Unicode, NFKC, control characters as spaces), then
invisible format characters as spaces, whitespace collapsed, lower case, length cap. Emoji stay
characters. Never raises on odd input.
"""
from __future__ import annotations

import re
from collections import Counter
from itertools import repeat
from typing import Iterable

import numpy as np

from ..catalog.cleaning import clean_text

_INVISIBLE = re.compile(r"[\u200b-\u200f\u2028-\u202e\ufeff]")
_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"\W+")
PAD, UNK = 0, 1


def normalize_text(text: object, max_chars: int | None = None) -> str:
    s = clean_text(text)
    if not s.isascii():
        s = _INVISIBLE.sub(" ", s)
    s = _SPACE.sub(" ", s).strip().lower()
    return s[:max_chars] if max_chars else s


MAX_SPEC_KEYS = 40  # attribute names read per item (a template has a dozen or two)
SPEC_PREFIX = "spec_"


def spec_keys(specs: object) -> str:
    """The attribute names of a canonical ``specs`` text (``key: value`` lines) as word tokens,
    ``spec_designed_for spec_type ...``, in order, each once.

    A shop fills one attribute template per kind of product, so the names alone say what the
    item is (a dial shape, a thread count, an oven-safe flag) when the title does not: on
    Flipkart's nested folds linear_text went from 0.954 to 0.960 accuracy at level 1 and 0.864
    to 0.885 at level 2 (README, "Attribute names and values"). Short values: ``spec_values``."""
    out: list[str] = []
    for line in clean_text(specs).split("\n"):
        key, sep, _ = line.partition(":")
        token = _NON_WORD.sub("_", normalize_text(key)).strip("_")[:40] if sep else ""
        if token and token not in out:
            out.append(token)
            if len(out) == MAX_SPEC_KEYS:
                break
    return " ".join(SPEC_PREFIX + t for t in out)


def spec_values(specs: object, max_value_chars: int) -> str:
    """The attributes of a canonical ``specs`` text whose value is at most ``max_value_chars``
    long, as ``name value ; name value ...`` (normalised), in order.

    Short values say what the item is and who it is for ("type face towel set", "ideal for
    baby girls, baby boys") where a third of Flipkart's descriptions are one "Buy X at Rs. N"
    line; long values (care texts, feature lists) repeat the description and are left to it.
    On Flipkart's level-2 folds char_cnn went from 0.873 to 0.904 accuracy with them, linear_text
    from 0.885 to 0.897 (README, "Attribute names and values")."""
    out = []
    for line in clean_text(specs).split("\n"):
        key, sep, value = line.partition(":")
        value = normalize_text(value)
        if sep and value and len(value) <= max_value_chars:
            out.append(f"{normalize_text(key)} {value}")
    return " ; ".join(out)


def _whole(parts: str, cap: int, sep: str) -> str:
    """``parts`` cut to at most ``cap`` characters at the last whole ``sep``-separated part."""
    return parts if len(parts) <= cap else parts[:cap + len(sep)].rpartition(sep)[0]


def item_text(title: object, description: object, max_chars: int, specs: object = None,
              value_chars: int = 0, keys: bool = True) -> str:
    """Title first (it carries most signal), then the short attribute values of ``specs``
    (``spec_values``, ``value_chars`` > 0), then the description, capped; the attribute names
    (``spec_keys``) last. Values and names take at most a quarter of the text each, whole
    ones only: the cap cuts the description for them (the char-CNN reads the first few hundred
    characters, so the values come before the description)."""
    text = normalize_text(title, max_chars)
    values = _whole(spec_values(specs, value_chars), max_chars // 4, " ; ") if specs and value_chars > 0 else ""
    if values:
        text += " | " + values
    d = normalize_text(description, max_chars)
    text = (text + " | " + d)[:max_chars] if d else text[:max_chars]
    names = _whole(spec_keys(specs), max_chars // 4, " ") if specs and keys else ""
    if not names:
        return text
    return (text[:max(max_chars - len(names) - 3, 0)] + " | " + names)[:max_chars]


def item_texts(titles: Iterable, descriptions: Iterable, max_chars: int, specs: Iterable | None = None,
               value_chars: int = 0, keys: bool = True) -> list[str]:
    specs = repeat(None) if specs is None else specs
    return [item_text(t, d, max_chars, k, value_chars, keys) for t, d, k in zip(titles, descriptions, specs)]


def catalog_texts(items, catalog) -> list[str]:
    """The text models' input for each item of a canonical item table, as the catalog settings
    say (``catalog``: ``max_text_chars``, ``spec_keys``, ``spec_values``; the specs are read
    where the table has them)."""
    value_chars = int(catalog.spec_values or 0)
    use = (catalog.spec_keys or value_chars > 0) and "specs" in items.columns
    return item_texts(items["title"], items["description"], catalog.max_text_chars,
                      items["specs"] if use else None, value_chars, catalog.spec_keys)


class CharVocab:
    """Character -> id map learned from training texts; rare characters map to <unk>."""

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.index = {c: i + 2 for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Iterable[str], max_vocab: int, min_count: int) -> "CharVocab":
        counts = Counter()
        for t in texts:
            counts.update(t)
        chars = [c for c, n in counts.most_common(max_vocab) if n >= min_count]
        return cls(sorted(chars))

    def __len__(self) -> int:
        return len(self.chars) + 2

    def encode(self, texts: list[str], max_len: int) -> np.ndarray:
        out = np.zeros((len(texts), max_len), dtype=np.int64)
        get = self.index.get
        for i, t in enumerate(texts):
            ids = [get(c, UNK) for c in t[:max_len]]
            out[i, : len(ids)] = ids
        return out
