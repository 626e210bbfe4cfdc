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
_CACHE_WORDS = 200_000  # distinct words whose ids are kept between calls


class NgramHasher:
    def __init__(self, buckets: int, min_n: int, max_n: int, word_ngrams: int):
        self.buckets, self.min_n, self.max_n, self.word_ngrams = buckets, min_n, max_n, word_ngrams
        self._words: dict[str, np.ndarray] = {}

    def _hash(self, piece: str) -> int:
        return zlib.crc32(piece.encode("utf-8", "surrogatepass")) % self.buckets + 1

    def _word(self, word: str) -> np.ndarray:
        ids = self._words.get(word)
        if ids is None:
            w = f"<{word}>"
            grams = [w[i:i + n] for n in range(self.min_n, self.max_n + 1) for i in range(len(w) - n + 1)]
            ids = np.fromiter((self._hash(g) for g in [w, *grams]), np.int64)
            if len(self._words) > _CACHE_WORDS:
                self._words.clear()
            self._words[word] = ids
        return ids

    def row(self, text: str) -> np.ndarray:
        """The row's distinct ids in order of first appearance."""
        words = _TOKEN.findall(text)
        parts = [self._word(w) for w in words]
        if self.word_ngrams >= 2:
            parts.append(np.fromiter((self._hash(a + " " + b) for a, b in zip(words, words[1:])), np.int64))
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        _, first = np.unique(ids, return_index=True)
        return ids[np.sort(first)]

    def encode(self, texts: list[str], width: int) -> np.ndarray:
        out = np.zeros((len(texts), width), dtype=np.int64)
        for i, t in enumerate(texts):
            ids = self.row(t)[:width]
            out[i, :len(ids)] = ids
        return out

    def __getstate__(self):
        return {k: v for k, v in vars(self).items() if k != "_words"}  # a cache, rebuilt on use

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._words = {}
