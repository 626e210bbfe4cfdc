"""Stacks at ancestor depths (stack.ancestor_depths) on the demo catalog at level 2: the refined
leaf probabilities, thresholds on the refined out-of-fold scores, save/load, ablations, config."""
from __future__ import annotations

import json

import numpy as np
import pytest

from catalog_classifier import ancestors as anc
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.config import StackConfig
from catalog_classifier.evaluation_ablation import oof_ablations
from stacking.hierarchy import Hierarchy, refine_top_down
from stacking.thresholds import select_for

from conftest import fast_config

SEP = " > "


@pytest.fixture(scope="module")
def fitted(demo_catalog):
    cfg = fast_config(catalog={"label_depth": 2},
                      stack={"base_models": ["image_head", "linear_text"], "ancestor_depths": [1],
                             "num_boost_round": 60})
    items = demo_catalog.items
    train = items.sample(frac=0.8, random_state=1).sort_index()
    clf = CatalogClassifier(cfg).fit(train, image_root=demo_catalog.image_root, progress=False)
    return clf, train, items.drop(train.index).reset_index(drop=True)


def test_refine_keeps_sibling_ratios_and_takes_each_depths_sums():
    rng = np.random.default_rng(0)
    leaf = rng.dirichlet(np.ones(7), size=50)
    g2 = np.array([0, 0, 1, 1, 2, 3, 3])  # depth-2 groups of the 7 leaves
    g1 = np.array([0, 0, 0, 0, 1, 1, 1])  # depth-1 groups
    p2, p1 = rng.dirichlet(np.ones(4), size=50), rng.dirichlet(np.ones(2), size=50)
    q = refine_top_down(leaf, [(g2, p2), (g1, p1)])
    np.testing.assert_allclose(q.sum(1), 1)
    np.testing.assert_allclose(np.stack([q[:, g1 == k].sum(1) for k in range(2)], 1), p1, rtol=1e-9)
    # inside a depth-1 group the depth-2 groups keep the depth-2 model's ratios
    np.testing.assert_allclose(q[:, g2 == 0].sum(1) / q[:, g2 == 1].sum(1), p2[:, 0] / p2[:, 1], rtol=1e-9)
    # inside a depth-2 group the leaves keep the leaf model's ratios
    np.testing.assert_allclose(q[:, 0] / q[:, 1], leaf[:, 0] / leaf[:, 1], rtol=1e-9)


def test_ancestor_groups_cut_labels_and_keep_folded_leaves():
    labels = ["A > x", "A > y", "B", "B > z", "C > w"]
    names, group = anc.ancestor_groups(labels, 1)
    assert names == ["A", "B", "C"] and group.tolist() == [0, 0, 1, 1, 2]
    assert anc.depths_to_train([1, 2, 5], labels) == [1]  # depth 2 would repeat the leaves


def test_depth1_sums_are_the_depth1_stacks_own_probabilities(fitted, demo_catalog):
    clf, _, test = fitted
    assert [a.depth for a in clf.ancestors_] == [1]
    a = clf.ancestors_[0]
    assert a.labels == sorted({l.split(SEP)[0] for l in clf.labels_})
    p, _, _ = clf.predict_proba(test, demo_catalog.image_root)
    X, _ = clf.inputs(test, demo_catalog.image_root)
    p1 = a.stack.predict_proba(X, clf._passthrough(test, X))
    h = Hierarchy(clf.labels_, SEP)
    P = h.node_proba(p)
    for j, name in enumerate(a.labels):
        np.testing.assert_allclose(P[:, h.nodes.index(name)], p1[:, j], rtol=1e-7, atol=1e-12)
    # the leaf stack alone would have given other probabilities: the refinement did something
    leaf_only = clf.stack_.predict_proba(X, clf._passthrough(test, X))
    assert np.abs(leaf_only - p).max() > 0.05


def test_thresholds_are_chosen_on_the_refined_out_of_fold_scores(fitted):
    clf, _, _ = fitted
    st, a = clf.stack_, clf.ancestors_[0]
    h = Hierarchy(clf.labels_, SEP)
    P = h.node_proba(st.oof_proba_)
    for j, name in enumerate(a.labels):
        np.testing.assert_allclose(P[:, h.nodes.index(name)], a.stack.oof_proba_[:, j], rtol=1e-7, atol=1e-12)
    m = st.threshold_rows_
    np.testing.assert_array_equal(st.thresholds_, select_for(st.params, st.y_[m], st.oof_proba_[m],
                                                             st.params.target_precision))
    # ancestors are fitted on the leaf stack's folds
    np.testing.assert_array_equal(a.stack.fold_, st.fold_)


def test_save_load_predicts_the_same_and_marks_the_format(fitted, demo_catalog, tmp_path):
    clf, _, test = fitted
    clf.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "versions.json").read_text())["format"] == 3
    back = CatalogClassifier.load(tmp_path / "m")
    assert [a.depth for a in back.ancestors_] == [1]
    p0, _, _ = clf.predict_proba(test, demo_catalog.image_root)
    p1, _, _ = back.predict_proba(test, demo_catalog.image_root)
    np.testing.assert_allclose(p0, p1, rtol=1e-6, atol=1e-9)
    out0, out1 = clf.predict(test, demo_catalog.image_root), back.predict(test, demo_catalog.image_root)
    assert out0["category"].tolist() == out1["category"].tolist()
    assert out0["status"].tolist() == out1["status"].tolist()


def test_ablations_refine_with_ancestors_without_the_same_base(fitted, demo_catalog):
    clf, train, _ = fitted
    keep = clf.labels_for(train).notna().to_numpy()
    abl = oof_ablations(clf, train.loc[keep], demo_catalog.image_root)
    h = Hierarchy(clf.labels_, SEP)
    a = clf.ancestors_[0]
    for name, p in abl.items():
        base = name.removeprefix("stack_without_")
        a_wo = a.stack.without([base], clf.passthrough(train.loc[keep].reset_index(drop=True),
                                                       demo_catalog.image_root))
        P = h.node_proba(p)
        np.testing.assert_allclose(P[:, [h.nodes.index(n) for n in a.labels]], a_wo.oof_proba_, rtol=1e-6,
                                   atol=1e-9)


@pytest.mark.parametrize("bad", [[0], [1.5], [True], 1, "1"])
def test_ancestor_depths_are_checked(bad):
    with pytest.raises(ValueError, match="ancestor_depths"):
        StackConfig(ancestor_depths=bad)
