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
    to 0.885 at level 2 (README, "Attribute names"). Values are left out: they mostly repeat
    the description."""
    out: list[str] = []
    for line in clean_text(specs).split("\n"):
        key, sep, _ = line.partition(":")
        token = _NON_WORD.sub("_", normalize_text(key)).strip("_")[:40] if sep else ""
        if token and token not in out:
            out.append(token)
            if len(out) == MAX_SPEC_KEYS:
                break
    return " ".join(SPEC_PREFIX + t for t in out)


def item_text(title: object, description: object, max_chars: int, specs: object = None) -> str:
    """Title first (it carries most signal), then description, capped; the attribute names of
    ``specs`` (``spec_keys``) last, kept whole: the cap cuts the description for them."""
    t = normalize_text(title, max_chars)
    d = normalize_text(description, max_chars)
    text = (t + " | " + d)[:max_chars] if d else t
    keys = spec_keys(specs) if specs else ""
    if len(keys) > max_chars // 4:  # a quarter of the text at most, whole names
        keys = keys[:max_chars // 4 + 1].rpartition(" ")[0]
    if not keys:
        return text
    return (text[:max(max_chars - len(keys) - 3, 0)] + " | " + keys)[:max_chars]


def item_texts(titles: Iterable, descriptions: Iterable, max_chars: int, specs: Iterable | None = None) -> list[str]:
    specs = repeat(None) if specs is None else specs
    return [item_text(t, d, max_chars, k) for t, d, k in zip(titles, descriptions, specs)]


def catalog_texts(items, max_chars: int, use_specs: bool) -> list[str]:
    """The text models' input for each item of a canonical item table (``catalog.spec_keys``:
    with the attribute names of its ``specs``, where the table has them)."""
    specs = items["specs"] if use_specs and "specs" in items.columns else None
    return item_texts(items["title"], items["description"], max_chars, specs)


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
