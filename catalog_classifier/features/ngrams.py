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
from itertools import chain

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]+")
_CACHE_WORDS = 200_000  # distinct words (and word pairs) whose ids are kept between calls
_BLOCK = 16  # words added at a time while filling a row of limited width


class NgramHasher:
    def __init__(self, buckets: int, min_n: int, max_n: int, word_ngrams: int):
        self.buckets, self.min_n, self.max_n, self.word_ngrams = buckets, min_n, max_n, word_ngrams
        self._words: dict[str, tuple[int, ...]] = {}
        self._pairs: dict[tuple[str, str], int] = {}

    def _hash(self, piece: str) -> int:
        return zlib.crc32(piece.encode("utf-8", "surrogatepass")) % self.buckets + 1

    def _word(self, word: str) -> tuple[int, ...]:
        """The word's own id, then its character n-grams' ids (``min_n`` first, in text order)."""
        ids = self._words.get(word)
        if ids is None:
            w = f"<{word}>"
            grams = [w[i:i + n] for n in range(self.min_n, self.max_n + 1) for i in range(len(w) - n + 1)]
            ids = tuple(self._hash(g) for g in [w, *grams])
            if len(self._words) > _CACHE_WORDS:
                self._words.clear()
            self._words[word] = ids
        return ids

    def _pair(self, pair: tuple[str, str]) -> int:
        h = self._pairs.get(pair)
        if h is None:
            h = self._hash(pair[0] + " " + pair[1])
            if len(self._pairs) > _CACHE_WORDS:
                self._pairs.clear()
            self._pairs[pair] = h
        return h

    def _ids(self, text: str, width: int | None = None) -> list[int]:
        """The row's distinct ids in order of first appearance (every word's, then the word
        pairs'); with ``width``, only the first ``width`` of them (the rest is never hashed)."""
        words = _TOKEN.findall(text)
        ids: dict[int, None] = {}
        step = _BLOCK if width is not None else max(len(words), 1)
        for s in range(0, len(words), step):
            ids.update(dict.fromkeys(chain.from_iterable(map(self._word, words[s:s + step]))))
            if width is not None and len(ids) >= width:
                return list(ids)[:width]
        if self.word_ngrams >= 2:
            ids.update(dict.fromkeys(map(self._pair, zip(words, words[1:]))))
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
        self._words, self._pairs = {}, {}
