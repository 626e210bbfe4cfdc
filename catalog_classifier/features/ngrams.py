"""Normalised text -> hashed character n-gram ids per row (fastText-style subwords).

Each word, with boundary markers (``<word>``), gives its character n-grams (``min_n``..``max_n``)
and itself; with ``word_ngrams=2`` adjacent word pairs too. Every piece is hashed (CRC-32 of its
UTF-8 bytes: the same in every process, unlike ``hash``) into ids 1..``buckets``; 0 pads. A row
keeps each id once, in text order (title first), up to a width: a padded id matrix, which
exports to OpenVINO (Embedding + masked mean) where a ragged EmbeddingBag would not.
"""
from __future__ import annotations

import re
import zlib

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]+")
_CACHE_WORDS = 100_000  # distinct words (and word pairs) whose ids are kept between calls (~2 kB a word)
_BLOCK = 8  # words added at a time while filling a row of limited width


class _Memo(dict):
    """key -> ``make(key)``, computed on first sight; starts over beyond ``limit`` entries.
    A hit is a plain dict lookup (``__getitem__`` in C), so a row's words map at C speed."""

    def __init__(self, make, limit: int = _CACHE_WORDS):
        super().__init__()
        self.make, self.limit = make, limit

    def __missing__(self, key):
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.make(key)
        return value


class NgramHasher:
    def __init__(self, buckets: int, min_n: int, max_n: int, word_ngrams: int):
        self.buckets, self.min_n, self.max_n, self.word_ngrams = buckets, min_n, max_n, word_ngrams
        self._new_caches()

    def _new_caches(self) -> None:
        self._words = _Memo(self._word)  # word -> {id: None}, the word's ids in order
        self._pairs = _Memo(self._pair)  # (word, next word) -> id

    def _hash(self, piece: str) -> int:
        return zlib.crc32(piece.encode("utf-8", "surrogatepass")) % self.buckets + 1

    def _word(self, word: str) -> dict[int, None]:
        """The word's own id, then its character n-grams' ids (``min_n`` first, in text order),
        each once: a dict, so a row adds them with one ``dict.update``."""
        w = f"<{word}>"
        grams = [w[i:i + n] for n in range(self.min_n, self.max_n + 1) for i in range(len(w) - n + 1)]
        return dict.fromkeys(self._hash(g) for g in [w, *grams])

    def _pair(self, pair: tuple[str, str]) -> int:
        return self._hash(pair[0] + " " + pair[1])

    def _ids(self, text: str, width: int | None = None) -> list[int]:
        """The row's distinct ids in order of first appearance (every word's, then the word
        pairs'); with ``width``, only the first ``width`` of them (the rest is never hashed)."""
        words = _TOKEN.findall(text)
        ids: dict[int, None] = {}
        add, word = ids.update, self._words.__getitem__
        step = _BLOCK if width is not None else max(len(words), 1)
        for s in range(0, len(words), step):
            for grams in map(word, words[s:s + step]):
                add(grams)
            if width is not None and len(ids) >= width:
                return list(ids)[:width]
        if self.word_ngrams >= 2:
            add(dict.fromkeys(map(self._pairs.__getitem__, zip(words, words[1:]))))
        return list(ids)[:width]

    def row(self, text: str) -> np.ndarray:
        """The row's distinct ids in order of first appearance."""
        return np.array(self._ids(text), dtype=np.int64)

    def encode(self, texts: list[str], width: int) -> np.ndarray:
        out = np.zeros((len(texts), width), dtype=np.int64)
        for i, t in enumerate(texts):
            ids = self._ids(t, width)
            out[i, :len(ids)] = ids
        return out

    def __getstate__(self):
        return {k: v for k, v in vars(self).items() if k not in ("_words", "_pairs")}  # caches, rebuilt on use

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._new_caches()
