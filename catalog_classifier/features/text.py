"""Listing text -> normalised characters -> integer sequences for the char-CNN.

Listings are spec lists, brand codes, emoji and mixed scripts: the catalog's one cleaning
(``catalog.cleaning.clean_text``: valid Unicode, NFKC, control characters as spaces), then
invisible format characters as spaces, whitespace collapsed, lower case, length cap. Emoji stay
characters. Never raises on odd input.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

import numpy as np

from ..catalog.cleaning import clean_text

_INVISIBLE = re.compile(r"[\u200b-\u200f\u2028-\u202e\ufeff]")
_SPACE = re.compile(r"\s+")
PAD, UNK = 0, 1


def normalize_text(text: object, max_chars: int | None = None) -> str:
    s = clean_text(text)
    if not s.isascii():
        s = _INVISIBLE.sub(" ", s)
    s = _SPACE.sub(" ", s).strip().lower()
    return s[:max_chars] if max_chars else s


def item_text(title: object, description: object, max_chars: int) -> str:
    """Title first (it carries most signal), then description, capped."""
    t = normalize_text(title, max_chars)
    d = normalize_text(description, max_chars)
    return (t + " | " + d)[:max_chars] if d else t


def item_texts(titles: Iterable, descriptions: Iterable, max_chars: int) -> list[str]:
    return [item_text(t, d, max_chars) for t, d in zip(titles, descriptions)]


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
