"""Taxonomy-aware routing on the demo catalog's full paths (label_depth "leaf", mixed depths
after rare leaves fold): node probabilities, the climb, ancestor thresholds, guarantee mode,
the route() contract, save/load and the evaluation records. One fit for the whole module."""
from __future__ import annotations

import json

import numpy as np
import pytest

from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.config import CatalogConfig
from catalog_classifier.evaluation import records, save_pictures
from catalog_classifier.evaluation_oof import oof_cross_validate
from catalog_classifier.nightly.review.exports import _guess
from stacking.hierarchy import Hierarchy, HierarchicalRouter, stage_delta
from stacking.thresholds import (clopper_pearson_lower, lowest_threshold,
                                 select_thresholds, wilson_lower)

from conftest import fast_config

SEP = " > "


@pytest.fixture(scope="module")
def fitted(demo_catalog):
    # the char-CNN (the slowest base, weight ~0 in the pool) is left out to keep the module fast
    cfg = fast_config(catalog={"label_depth": "leaf"},
                      stack={"num_boost_round": 40, "target_precision": 0.95,
                             "base_models": ["image_head", "linear_text"]})
    res, clf = oof_cross_validate(demo_catalog.items, cfg, "flipkart1050", demo_catalog.image_root,
                                  progress=False)
    items = demo_catalog.items.loc[clf.labels_for(demo_catalog.items).notna().to_numpy()].reset_index(drop=True)
    return res, clf, items


def _under(label: str, node: str) -> bool:
    return label == node or label.startswith(node + SEP)


def test_leaf_depth_trains_full_paths_of_mixed_depth(fitted):
    _, clf, _ = fitted
    depths = {l.count(SEP) + 1 for l in clf.labels_}
    assert max(depths) >= 3 and len(depths) > 1  # full paths, some folded into their parent
    for bad in (0, -1, "deep", True, 1.5):
        with pytest.raises(ValueError, match="label_depth"):
            CatalogConfig(label_depth=bad)


def test_node_probabilities_are_sums_of_descendant_leaves(fitted):
    _, clf, _ = fitted
    labels, p = clf.labels_, clf.stack_.oof_proba_
    h = Hierarchy(labels, SEP)
    assert set(h.nodes) == {SEP.join(l.split(SEP)[:d]) for l in labels for d in range(1, l.count(SEP) + 1)}
    P = h.node_proba(p)
    for j, node in enumerate(h.nodes):
        cols = [c for c, l in enumerate(labels) if _under(l, node)]
        np.testing.assert_allclose(P[:, j], p[:, cols].sum(1), rtol=1e-9, atol=1e-12)
    tops = [j for j, n in enumerate(h.nodes) if SEP not in n]
    # a top-level leaf that is also a node (a folded parent) is already inside that node
    top_leaves = [c for c, l in enumerate(labels) if SEP not in l and l not in h.nodes]
    np.testing.assert_allclose(P[:, tops].sum(1) + p[:, top_leaves].sum(1), 1.0, atol=1e-9)


def _likeliest(labels, p):
    """From the strings alone: per ancestor depth d, each row's likeliest depth-d node (the
    summed probability of the labels at or below it) and that probability; none ("", NaN) where
    that node is less likely than the row's leaf guess."""
    out = {}
    for d in range(1, max(l.count(SEP) + 1 for l in labels)):
        nodes = sorted({SEP.join(l.split(SEP)[:d]) for l in labels if l.count(SEP) + 1 > d})
        M = np.array([[_under(l, n) for n in nodes] for l in labels], dtype=float)
        P = p @ M
        keep = P.max(1) >= p.max(1) - 1e-12
        out[d] = (np.where(keep, np.array(nodes, dtype=object)[P.argmax(1)], ""), np.where(keep, P.max(1), np.nan))
    return out


def _candidates(router: HierarchicalRouter, labels, row_p, leaf_thr):
    """(name, probability, threshold) from the leaf up, deepest depth first, from the strings alone;
    a depth's likeliest node less likely than the leaf guess is no candidate."""
    h = router.hierarchy_
    c = int(row_p.argmax())
    out = [(labels[c], row_p[c], leaf_thr[c])]
    for d, (node, prob) in sorted(_likeliest(labels, row_p[None]).items(), reverse=True):
        if node[0]:
            out.append((node[0], prob[0], router.node_thresholds_[h.nodes.index(node[0])]))
    return out


def test_climb_accepts_the_deepest_clearing_candidate(fitted):
    _, clf, items = fitted
    p, thr = clf.stack_.oof_proba_, clf.stack_.thresholds_
    out = clf.route(items, p)
    model_only = out["rule_id"].isna().to_numpy()
    assert (out["status"] == "accepted_partial").any()
    at_threshold = 0
    for i in np.flatnonzero(model_only):
        cands = _candidates(clf.hier_, clf.labels_, p[i], thr)
        if any(abs(prob - t) <= 1e-12 for _, prob, t in cands[1:]):
            # a row whose own node probability set its depth's threshold: this test's dense sum
            # and the climb's sparse one may differ in the last bit there, so which side it
            # falls on is not defined
            at_threshold += 1
            continue
        clearing = [k for k, (_, prob, t) in enumerate(cands) if prob >= t]
        row = out.iloc[i]
        if not clearing:
            assert row.status == "review" and row.accepted_depth == 0 and row.category == cands[0][0]
            continue
        name, prob, t = cands[clearing[0]]
        assert row.category == name and row.confidence == pytest.approx(prob) and row.threshold == t
        assert row.status == ("accepted" if clearing[0] == 0 else "accepted_partial")
        assert row.accepted_depth == name.count(SEP) + 1
        assert row.model_category == cands[0][0] and row.leaf_confidence == pytest.approx(cands[0][1])
        if row.status == "accepted_partial":
            assert row.reason.startswith(f"refine below {name}: ")
            # the review task's pre-filled label lies under the known ancestor (the leaf guess may not)
            guess = _guess({**row.to_dict(), "known_ancestor": name})
            assert guess is None or _under(guess, name)
            assert guess == next((g for g in (row.model_category, row.top1, row.top2, row.top3)
                                  if _under(g, name)), None)
    node_thr = clf.hier_.node_thresholds_
    assert at_threshold <= len(np.unique(node_thr[np.isfinite(node_thr)]))  # the rows that set one, no more


def _joint_precision(labels, y, p, leaf_thr, node_thr: dict[int, float], likeliest=None):
    """From the strings alone: the climb with one threshold per ancestor depth; for every row
    whether it is accepted and whether the accepted category is right (hierarchically)."""
    likeliest = likeliest or _likeliest(labels, p)
    pred = p.argmax(1)
    acc = p.max(1) >= np.asarray(leaf_thr)[pred]
    ok = acc & (pred == y)
    for d in sorted(likeliest, reverse=True):
        node, prob = likeliest[d]
        take = ~acc & (prob >= node_thr.get(d, np.inf))
        acc |= take
        ok |= take & np.array([_under(labels[t], n) for t, n in zip(y, node)])
    return acc, ok


def test_one_threshold_per_depth_the_lowest_at_which_everything_accepted_reaches_the_target(fitted):
    _, clf, _ = fitted
    st, router = clf.stack_, clf.hier_
    m = st.threshold_rows_
    y, p, target = st.y_[m], st.oof_proba_[m], clf.config.stack.target_precision
    conf = clf.config.stack.ancestor_confidence
    labels, h = list(clf.labels_), router.hierarchy_
    thr = {int(d): np.unique(router.node_thresholds_[h.node_depth == d]) for d in np.unique(h.node_depth)}
    assert all(len(t) == 1 for t in thr.values())  # every node of a depth shares its threshold
    thr = {d: float(t[0]) for d, t in thr.items()}
    assert any(np.isfinite(t) for t in thr.values())
    lk = _likeliest(labels, p)
    for d in sorted(thr, reverse=True):  # deepest first, as chosen
        deeper = {e: t for e, t in thr.items() if e > d}
        acc0, _ = _joint_precision(labels, y, p, st.thresholds_, deeper, lk)
        # the depth's own candidates: not accepted deeper; each row's likeliest depth-d node
        cand_p = lk[d][1]
        cand = ~acc0
        values = np.unique(cand_p[cand])
        ok_at = {}
        for v in values[::max(1, len(values) // 25)].tolist() + [thr[d]]:
            if not np.isfinite(v):
                continue
            acc, ok = _joint_precision(labels, y, p, st.thresholds_, {**deeper, d: v}, lk)
            n_own = int((cand & (cand_p >= v)).sum())
            lo = wilson_lower(np.array([ok[acc].sum()]), np.array([acc.sum()]), conf)[0]
            ok_at[v] = n_own >= st.params.min_support and lo >= target
        if np.isfinite(thr[d]):
            assert ok_at[thr[d]], (d, thr[d])
        assert not any(reach for v, reach in ok_at.items() if v < thr[d]), d
    # everything accepted on these rows reaches the target (its Wilson bound does)
    acc, ok = _joint_precision(labels, y, p, st.thresholds_, thr, lk)
    assert wilson_lower(np.array([ok[acc].sum()]), np.array([acc.sum()]), conf)[0] >= target


def test_is_under_is_hierarchical_correctness_elementwise(fitted):
    _, clf, _ = fitted
    labels, h = list(clf.labels_), clf.hier_.hierarchy_
    rng = np.random.default_rng(0)
    nodes = rng.integers(-1, len(h.nodes), 500)
    true = rng.integers(0, len(labels), 500)
    nodes[:50] = h.ancestor_at[true[:50], 0]  # some true ancestors too
    got = h.is_under(nodes, true)
    want = [n >= 0 and _under(labels[t], h.nodes[n]) for n, t in zip(nodes, true)]
    assert got.tolist() == want and got[:50].any() and not got[nodes < 0].any()


def test_guaranteed_thresholds_pool_the_rows_and_every_cut_above_passed(fitted):
    _, clf, _ = fitted
    y, p = clf.stack_.y_, clf.stack_.oof_proba_
    labels = list(clf.labels_)
    delta = stage_delta(labels, 0.05)
    assert delta == pytest.approx(0.05 / max(l.count(SEP) + 1 for l in labels))  # Bonferroni over stages
    guar = select_thresholds(y, p, 0.9, 10, method="guaranteed", delta=delta)
    assert np.isfinite(guar).all() and len(np.unique(guar)) == 1  # one threshold for all classes
    conf, right = p.max(1), p.argmax(1) == y
    pooled_point = lowest_threshold(conf, right, 0.9, 10)
    assert guar[0] >= pooled_point  # the bound costs coverage
    for v in np.unique(conf[conf >= guar[0]]):  # fixed-sequence testing: every cut above passed
        acc = conf >= v
        if clopper_pearson_lower(acc.sum(), acc.sum(), delta) >= 0.9:  # the sequence's start
            assert clopper_pearson_lower(right[acc].sum(), acc.sum(), delta) >= 0.9
    # ancestors: one threshold per depth; they accept rows, and everything accepted passes the bound
    hg = HierarchicalRouter(0.9, 10, method="guaranteed", delta=delta).fit(labels, y, p, guar)
    h = hg.hierarchy_
    for d in np.unique(h.node_depth):
        assert len(np.unique(hg.node_thresholds_[h.node_depth == d])) == 1
    c = hg.climb(p, guar)
    assert (c.step > 0).sum() > 0
    acc, ok = _joint_precision(labels, y, p, guar, {int(d): float(hg.node_thresholds_[h.node_depth == d][0])
                                                    for d in np.unique(h.node_depth)})
    assert acc.tolist() == (c.step >= 0).tolist()
    assert clopper_pearson_lower(ok[acc].sum(), acc.sum(), delta) >= 0.9
    # the stack of a climbing classifier tests its leaf stage at the same share
    assert clf.stack_.params.risk_delta == pytest.approx(stage_delta(labels, clf.config.stack.risk_delta))


def test_full_depth_coverage_equals_flat_and_climbing_adds_coverage(fitted):
    _, clf, items = fitted
    p = clf.stack_.oof_proba_
    climbed = clf.route(items, p)
    clf.config.stack.hierarchical = False
    try:
        flat = clf.route(items, p)
    finally:
        clf.config.stack.hierarchical = True
    assert set(flat["status"]) <= {"accepted", "review"}
    assert ((climbed["status"] == "accepted") == (flat["status"] == "accepted")).all()
    partial = climbed["status"] == "accepted_partial"
    assert (flat.loc[partial, "status"] == "review").all() and partial.sum() > 0
    assert (climbed.loc[partial, "confidence"] >= climbed.loc[partial, "leaf_confidence"] - 1e-12).all()
    assert (climbed.loc[climbed["status"] == "review", "accepted_depth"] == 0).all()


def test_no_candidate_is_less_likely_than_the_leaf_guess(fitted):
    """Full paths are of mixed depth: a leaf guess shallower than d has no depth-d ancestor, and
    the likeliest depth-d node can hold a few percent. It is no candidate (the climb once
    accepted such nodes at 1-3% when the budget of the other rows allowed it)."""
    _, clf, _ = fitted
    h, p = clf.hier_.hierarchy_, clf.stack_.oof_proba_
    nodes, prob = h.depth_candidates(p)
    P, guess = h.node_proba(p), p.max(1)
    dropped = 0
    for d in range(1, h.max_depth):
        cols = np.flatnonzero(h.node_depth == d)
        best = P[:, cols].max(1)
        below = best < guess - 1e-12
        dropped += int(below.sum())
        assert (nodes[below, d - 1] == -1).all() and np.isnan(prob[below, d - 1]).all()
        assert (nodes[~below, d - 1] == cols[P[:, cols].argmax(1)][~below]).all()
        np.testing.assert_allclose(prob[~below, d - 1], best[~below])
    assert dropped > 0  # the demo's full paths do have such rows


def test_save_load_keeps_the_climb_and_an_old_model_routes_flat(fitted, tmp_path):
    _, clf, items = fitted
    p = clf.stack_.oof_proba_
    before = clf.route(items, p)
    clf.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "hierarchy.json").read_text())["node_thresholds"]
    again = CatalogClassifier.load(tmp_path / "m").route(items, p)
    assert before.equals(again)
    (tmp_path / "m" / "hierarchy.json").unlink()  # a model saved before the climb existed
    old = CatalogClassifier.load(tmp_path / "m").route(items, p)
    assert set(old["status"]) <= {"accepted", "review"}
    assert ((old["status"] == "accepted") == (before["status"] == "accepted")).all()


def test_set_target_precision_rechooses_ancestor_thresholds(fitted):
    _, clf, items = fitted
    before, target = clf.hier_.node_thresholds_.copy(), clf.config.stack.target_precision
    try:
        clf.set_target_precision(0.8)
        # not monotone per node (lower leaf thresholds leave other rows to the ancestors): re-chosen
        assert clf.hier_.target_precision == 0.8 and not np.array_equal(clf.hier_.node_thresholds_, before)
        clf.set_target_precision(0.8, method="guaranteed")
        assert clf.hier_.method == "guaranteed" and clf.stack_.params.threshold_method == "guaranteed"
        with pytest.raises(ValueError, match="threshold_method"):
            clf.set_target_precision(0.8, method="sure")
    finally:
        clf.set_target_precision(target, method="point")
    np.testing.assert_array_equal(clf.hier_.node_thresholds_, before)


def test_evaluation_records_carry_the_hierarchical_fields(fitted, tmp_path):
    res, _, _ = fitted
    recs = {r["model"]: r for r in records(res)}
    st, gu = recs["stack"], recs["stack_guaranteed"]
    for rec in (st, gu):
        for k in ("095", "098"):
            assert rec[f"coverage_full_depth_at_{k}"] == pytest.approx(rec[f"coverage_at_{k}"])
            assert rec[f"coverage_any_depth_at_{k}"] >= rec[f"coverage_full_depth_at_{k}"]
            assert rec[f"hierarchical_precision_at_{k}"] is None or 0 <= rec[f"hierarchical_precision_at_{k}"] <= 1
    assert st["coverage_any_depth_at_095"] > st["coverage_full_depth_at_095"]
    assert 1 <= st["mean_accepted_depth"] <= max(l.count(SEP) + 1 for l in res.labels)
    assert gu["risk_delta"] == 0.05 and len(gu["per_fold"]) == len(np.unique(res.fold))
    for f in gu["per_fold"]:
        lo, hi = f["precision_ci_at_095"]
        if f["n_accepted_at_095"]:
            assert lo <= f["hierarchical_precision_at_095"] <= hi
    paths = save_pictures(res, tmp_path)
    assert (tmp_path / f"flipkart1050_Lleaf_hier_risk_coverage.png") in paths


def test_a_bad_level_option_is_one_line_and_exit_code_2(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import DEMO_CSV, ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "catalog_classifier", "evaluate", "--catalog", str(DEMO_CSV),
                        "--level", "deep", "--report", str(tmp_path / "e.json"), "--no-log-mlflow"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["error: --level must be a whole number >= 1 or 'leaf', got 'deep'"]


def test_saved_scores_join_back_to_the_source_rows_by_id(fitted, demo_catalog, tmp_path):
    from catalog_classifier.evaluation import save_scores

    res, clf, _ = fitted
    z = np.load(save_scores(res, tmp_path))
    assert {"proba_stack", "proba_linear_text", "proba_tfidf_lr"} <= set(z.files)
    assert list(z["models"]) == sorted(res.proba) + sorted(res.ablation)
    assert z["proba_stack"].shape == (len(res.y), len(res.labels))
    np.testing.assert_allclose(z["proba_stack"], res.proba["stack"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(z["fold"], res.fold)
    # every row's id finds its source row, whose category at the trained depth is the saved label
    truth = clf.labels_for(demo_catalog.items).set_axis(demo_catalog.items["item_id"].astype(str))
    assert len(set(z["item_id"])) == len(z["item_id"]) == len(res.y)
    assert list(z["labels"][z["label"]]) == list(truth.loc[z["item_id"]])


def test_a_scores_folder_that_is_a_file_is_one_line_and_exit_code_2(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import DEMO_CSV, ROOT

    (tmp_path / "f").write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "catalog_classifier", "evaluate", "--catalog", str(DEMO_CSV),
                        "--scores", str(tmp_path / "f"), "--report", str(tmp_path / "e.json"), "--no-log-mlflow"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: --scores {str(tmp_path / 'f')!r} is a file, not a folder"]
    assert not (tmp_path / "e.json").exists()
