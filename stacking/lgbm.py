"""LightGBM multiclass meta-classifier with early stopping and class weights."""
from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = len(y) / (n_classes * np.maximum(counts, 1))
    return w[y]


def lgbm_params(n_classes: int, learning_rate: float, num_leaves: int, min_data_in_leaf: int,
                seed: int, num_threads: int | None = None) -> dict:
    """``num_threads`` None: LightGBM's default (OpenMP's thread count)."""
    params = {
        "objective": "multiclass",
        "num_class": n_classes,
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        # brand/domain are high-cardinality: LightGBM's advice is regularised categorical splits
        "cat_smooth": 10.0,
        "min_data_per_group": 20,
        "max_cat_to_onehot": 8,
        "max_bin": 63,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }
    if num_threads is not None:
        params["num_threads"] = int(num_threads)
    return params


def _dataset(X, y, weight, names, cats, reference=None, init_score=None):
    # LightGBM wants a multiclass init_score as [n, C]; it is added to the raw score
    return lgb.Dataset(
        X, label=y, weight=weight, feature_name=[f"f{i}_{_safe(n)}" for i, n in enumerate(names)],
        categorical_feature=cats, free_raw_data=False, reference=reference, init_score=init_score,
    )


def _safe(name: str) -> str:
    # LightGBM refuses some characters in feature names (JSON specials)
    return "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "_-." else "_" for ch in name)[:40]


def train_meta(
    X: sp.csr_matrix, y: np.ndarray, names: list[str], cats: list[int], params: dict,
    num_boost_round: int, weight: np.ndarray | None = None,
    X_valid: sp.csr_matrix | None = None, y_valid: np.ndarray | None = None,
    w_valid: np.ndarray | None = None, early_stopping_rounds: int = 30,
    init: np.ndarray | None = None, init_valid: np.ndarray | None = None,
) -> lgb.Booster:
    """Train; ``init``/``init_valid`` are starting raw scores [n, C] the trees correct
    (the booster's own predictions then exclude them: add them back)."""
    train = _dataset(X, y, weight, names, cats, init_score=init)
    if X_valid is None:
        return lgb.train(params, train, num_boost_round=num_boost_round)
    valid = _dataset(X_valid, y_valid, w_valid, names, cats, reference=train, init_score=init_valid)
    return lgb.train(
        params, train, num_boost_round=num_boost_round, valid_sets=[valid],
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )


def raw_scores(booster: lgb.Booster, X: sp.csr_matrix, num_iteration: int | None = None) -> np.ndarray:
    return np.asarray(booster.predict(X, raw_score=True, num_iteration=num_iteration))


def class_boosters(booster: lgb.Booster) -> list[lgb.Booster]:
    """One single-output booster per class of a multiclass ``booster``: that class's trees only.

    A multiclass model grows one tree per class per round (tree ``i`` belongs to class
    ``i % num_class``); LightGBM's ``pred_contrib`` walks every class's trees for every row,
    so explaining one class costs ``num_class`` times what it needs. The same trees, loaded
    as a one-output model, give the same raw score and the same SHAP values for that class."""
    k = booster.num_model_per_iteration()
    text = booster.model_to_string()
    head, rest = text.split("\nTree=", 1)
    trees, tail = rest.split("\nend of trees", 1)
    blocks = re.split(r"\n(?=Tree=\d+\n)", "Tree=" + trees)
    if len(blocks) % k:
        raise ValueError(f"{len(blocks)} trees is not a whole number of rounds of {k} classes")
    one = {"num_class": "num_class=1", "num_tree_per_iteration": "num_tree_per_iteration=1",
           "objective": "objective=regression"}
    header = "\n".join(one.get(line.split("=", 1)[0], line) for line in head.split("\n")
                       if not line.startswith("tree_sizes="))  # sizes are optional; they change here
    pandas = tail[tail.find("pandas_categorical:"):] if "pandas_categorical:" in tail else ""
    out = []
    for c in range(k):
        body = "\n\n".join(re.sub(r"^Tree=\d+", f"Tree={j}", b.strip("\n")) for j, b in enumerate(blocks[c::k]))
        out.append(lgb.Booster(model_str=f"{header}\n{body}\n\n\nend of trees\n\n{pandas}"))
    return out
