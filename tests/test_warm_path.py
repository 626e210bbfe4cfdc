"""The warm path's faster inference gives the same answers as the plain one, on real text.

char-CNN: OpenVINO-compiled inference vs torch eager on the same fitted net (demo texts).
TF-IDF: the per-word char n-gram counting and the direct word counting vs
TfidfVectorizer.transform, matrices compared exactly (demo + BigBasket text, fitted on the demo catalog).
"""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from catalog_classifier.catalog import read_catalog
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.config import load_config
from catalog_classifier.features.text import item_texts
from catalog_classifier.models.char_cnn import CharCNNClassifier
from catalog_classifier.models.linear_text import LinearText

from conftest import ROOT, SHARED, fast_config, require_dataset


@pytest.fixture(scope="module")
def demo_texts(demo_catalog):
    items = demo_catalog.items.sample(n=300, random_state=1).reset_index(drop=True)
    labels = CatalogClassifier(fast_config()).labels_for(items)
    items, labels = items[labels.notna().to_numpy()], labels.dropna()
    return item_texts(items["title"], items["description"], 600), labels.astype(str).to_numpy()


@pytest.fixture(scope="module")
def bigbasket_texts():
    csv = require_dataset(SHARED / "bigbasket" / "BigBasket Products.csv")
    cat = read_catalog(csv, load_config(ROOT / "configs" / "bigbasket.yaml").catalog)
    items = cat.items.sample(n=400, random_state=0)
    return item_texts(items["title"], items["description"], 600)


def test_char_cnn_openvino_matches_torch(demo_texts):
    texts, y = demo_texts
    fitted = CharCNNClassifier(epochs=2, max_len=256, runtime="torch", device="cpu").fit(
        SimpleNamespace(texts=texts[:200]), y[:200])
    X = SimpleNamespace(texts=texts[200:] + texts[:7])  # held-out rows, a batch size != the example's
    want = fitted.predict_proba(X)
    assert "_compiled" not in vars(fitted)  # torch asked for: nothing compiled
    fitted.set_params(runtime="auto")
    np.testing.assert_array_equal(fitted.predict_proba(X), want)  # auto, less than a batch: torch, no compile
    assert "_compiled" not in vars(fitted)
    big = SimpleNamespace(texts=texts[:256])
    want_big = fitted.set_params(runtime="torch").predict_proba(big)
    got_big = fitted.set_params(runtime="auto").predict_proba(big)  # a full batch: compiled
    compiled = vars(fitted)["_compiled"]
    assert np.abs(got_big - want_big).max() <= 1e-5
    got = fitted.predict_proba(X)  # once compiled, every call runs compiled
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
    assert not np.allclose(want, want.mean(0))  # a real model: the rows differ
    fitted.predict_proba(X)
    assert vars(fitted)["_compiled"] is compiled  # compiled once per fitted model
    # never pickled, never a parameter; a copy recompiles and gives the same answer
    twin = pickle.loads(pickle.dumps(fitted))
    assert "_compiled" not in vars(twin) and "_compiled" not in fitted.get_params()
    np.testing.assert_allclose(twin.predict_proba(X), got, atol=1e-5)
    assert "_compiled" not in vars(clone(fitted))
    # refitting drops the compiled net of the old weights
    fitted.fit(SimpleNamespace(texts=texts[:120]), y[:120])
    assert "_compiled" not in vars(fitted)


def test_tfidf_fast_transform_is_exact(demo_texts, bigbasket_texts):
    texts, y = demo_texts
    model = LinearText().fit(SimpleNamespace(texts=texts[:250]), y[:250])
    char_vec, word_vec = model.vecs_
    assert char_vec.analyzer == "char_wb"
    unseen = texts[250:] + bigbasket_texts + ["", "   ", "x", "ÉCLAIR  tab\there"]
    assert word_vec.analyzer == "word" and word_vec.ngram_range == (1, 2)
    for batch in (unseen, unseen[:40], texts[:250], ["", "x"]):  # second pass reuses the word cache
        for vec in (char_vec, word_vec):
            want = sp.csr_matrix(vec.transform(batch))
            got = sp.csr_matrix(model._transform(vec, batch))
            assert got.shape == want.shape and got.dtype == want.dtype
            assert (got != want).nnz == 0
            for part in ("indptr", "indices", "data"):  # the same entries in the same order
                np.testing.assert_array_equal(getattr(got, part), getattr(want, part))
        full = sp.hstack([char_vec.transform(batch), word_vec.transform(batch)], format="csr")
        np.testing.assert_array_equal(model._features(batch, fit=False).toarray(), full.toarray())
    assert len(vars(model)["_word_ids"]) > 100
    assert "_word_ids" not in vars(pickle.loads(pickle.dumps(model)))


def test_char_cnn_without_conv_branch_ignores_the_character_ids(demo_texts):
    """filters=0 (the default) leaves the character ids at 0: the same probabilities as the net
    fed the real ids, on held-out demo rows."""
    import torch

    texts, y = demo_texts
    m = CharCNNClassifier(epochs=1, max_len=256, runtime="torch", device="cpu").fit(
        SimpleNamespace(texts=texts[:200]), y[:200])
    assert m.filters == 0
    held = texts[200:]
    real = np.concatenate([m.vocab_.encode(held, m.seq_len_), m.hasher_.encode(held, m.ngram_len_)], axis=1)
    assert (real[:, :m.seq_len_] != 0).any()
    with torch.inference_mode():
        want = torch.softmax(m.net_(torch.from_numpy(real)), dim=1).numpy()
    np.testing.assert_allclose(m.predict_proba(SimpleNamespace(texts=held)), want, rtol=0, atol=1e-6)
