"""Sentencepiece title tokens: a unigram model trained on the catalog's own titles,
saved (as bytes) with the model version, and turned into sparse token counts."""
from __future__ import annotations

import io

import numpy as np
import scipy.sparse as sp
import sentencepiece as spm


class TitleTokenizer:
    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, titles: list[str], vocab_size: int, seed: int = 0) -> "TitleTokenizer":
        titles = [t for t in titles if t.strip()] or ["empty"]
        # sentencepiece wants a vocab no larger than the data supports: retry smaller
        size = vocab_size
        while True:
            buf = io.BytesIO()
            try:
                spm.SentencePieceTrainer.train(
                    sentence_iterator=iter(titles), model_writer=buf, vocab_size=size,
                    model_type="unigram", character_coverage=0.9995,
                    num_threads=1, minloglevel=2, max_sentence_length=8192,
                )
                return cls(buf.getvalue())
            except RuntimeError as e:
                if "Vocabulary size" not in str(e) or size <= 16:
                    raise
                size = max(16, size // 2)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def names(self) -> list[str]:
        return [f"sp:{self.sp.id_to_piece(i)}" for i in range(self.vocab_size)]

    def counts(self, titles: list[str]) -> sp.csr_matrix:
        ids = self.sp.encode(list(titles))
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(x) for x in ids])
        indices = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=int(indptr[-1]))
        data = np.ones(len(indices), dtype=np.float32)
        m = sp.csr_matrix((data, indices, indptr), shape=(len(ids), self.vocab_size))
        m.sum_duplicates()
        return m
