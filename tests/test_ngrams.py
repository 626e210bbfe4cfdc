"""Hashed character n-grams of real demo texts: stable ids, each once per row, padded width."""
from __future__ import annotations

import pickle
import zlib

import numpy as np
import pandas as pd

from catalog_classifier.features.ngrams import NgramHasher
from catalog_classifier.features.text import item_texts

from conftest import DEMO_CSV, require_dataset


def _texts(n=60):
    df = pd.read_csv(require_dataset(DEMO_CSV), usecols=["product_name", "description"], dtype=str).fillna("")
    return item_texts(df["product_name"].head(n), df["description"].head(n), 4000)


def test_ids_are_stable_distinct_and_padded():
    texts = _texts()
    h = NgramHasher(1 << 18, 2, 5, 2)
    ids = h.encode(texts, 256)
    assert ids.shape == (len(texts), 256) and ids.min() >= 0 and ids.max() <= 1 << 18
    for row in ids:
        kept = row[row != 0]
        assert len(kept) == len(np.unique(kept))  # each id once
        assert (row[len(kept):] == 0).all()  # padding only at the end
    # the hash is CRC-32 of the piece, not Python's per-process hash()
    assert h._hash("<ab") == zlib.crc32("<ab".encode()) % (1 << 18) + 1
    word = texts[0].split()[0]
    assert h._hash(f"<{word}>") in ids[0]
    twin = pickle.loads(pickle.dumps(h))
    assert twin._words == {} and np.array_equal(twin.encode(texts, 256), ids)


def test_settings_change_the_ids():
    texts = _texts(10)
    base = NgramHasher(1 << 18, 2, 5, 2).encode(texts, 4096)
    no_pairs = NgramHasher(1 << 18, 2, 5, 1).encode(texts, 4096)
    assert (no_pairs != 0).sum() < (base != 0).sum()
    assert not np.array_equal(NgramHasher(1 << 16, 2, 5, 2).encode(texts, 4096), base)


def _reference_row(h: NgramHasher, text: str) -> list[int]:
    """The module docstring's definition, spelled out: every word's ``<word>`` and its n-grams,
    then the adjacent word pairs, hashed; each id once, in order of first appearance."""
    import re

    words = re.findall(r"\w+|[^\w\s]+", text)
    pieces = []
    for w in words:
        m = f"<{w}>"
        pieces += [m] + [m[i:i + n] for n in range(h.min_n, h.max_n + 1) for i in range(len(m) - n + 1)]
    if h.word_ngrams >= 2:
        pieces += [a + " " + b for a, b in zip(words, words[1:])]
    return list(dict.fromkeys(zlib.crc32(p.encode("utf-8", "surrogatepass")) % h.buckets + 1 for p in pieces))


def test_rows_follow_the_definition_at_any_width():
    texts = _texts(200) + ["", "  ", "ÉCLAIR ☕☕ x-y", "a b a b a b"]
    h = NgramHasher(1 << 18, 2, 5, 2)
    want = [_reference_row(h, t) for t in texts]
    for width in (8, 64, 512, 4096):  # a narrow row stops hashing early; it must keep the same ids
        ids = h.encode(texts, width)
        for row, ref in zip(ids, want):
            ref = ref[:width]
            assert row[:len(ref)].tolist() == ref and not row[len(ref):].any()
    assert [h.row(t).tolist() for t in texts] == want
