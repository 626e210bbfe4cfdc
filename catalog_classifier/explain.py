"""Why, per item: what decided a prediction the model did not accept at full depth.

Two parts, kept apart so that another meta-classifier can supply its own contributions:
- ``group_contributions`` sums per-feature contributions (any additive attribution whose
  row sums are the class's raw score, e.g. LightGBM's ``pred_contrib`` from
  ``StackedClassifier.contributions``) into readable feature groups derived from the
  meta features' names (stacking/meta_features.py);
- ``add_reasons`` puts, on every row whose status is not ``accepted``, a short ``why`` text
  (each base model's top guess, then the largest group contributions) and ``why_json``.

Contributions are in raw-score (logit, before temperature) units of the explained class:
the leaf guess (``model_category``), as the leaf stack scored it. Where stacks at ancestor
depths refined that score (catalog_classifier/ancestors.py), ``why_json["ancestors"]`` gives
each one's guess for the row's parent category at its depth and its probability, and the short
text names it after the base models (``depth 1 stack: Kitchen 0.97``). Computed only for the rows that need them, and each row
walks only the explained class's trees (``StackedClassifier.contributions``): LightGBM's
multiclass ``pred_contrib`` walks every tree of every class, about 10 ms per row at level 2 of
the demo catalog (31 classes, 1,426 trees, 577 meta features, a shared 2-core machine).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .models.registry import report_name

# base model -> group of its probability features; a model not listed is its own group
MODEL_GROUPS = {"image_head": "image", "char_cnn": "text models", "linear_text": "text models",
                "brand_prior": "brand prior"}
# passthrough dense feature -> group (features/tabular.FEATURES; another name is its own group)
DENSE_GROUPS = {"brand": "brand", "brand_freq": "brand", "log_price": "price", "domain": "domain",
                "has_image": "image", "title_len": "text length", "desc_len": "text length"}
TOKEN_GROUP = "title tokens"
# the re-ranker's per-candidate features (stacking/rerank.py): pool:*, cand:*
PREFIX_GROUPS = {"pool": "pooled base models", "cand": "category prior"}
POOL, BIAS = "pool", "bias"
SHOWN_GROUPS = 4  # groups named in the short text (the JSON keeps them all)


def feature_group(name: str) -> str:
    """The group of one meta feature name (``model:p3``, ``brand``, ``sp:▁mug``, ...)."""
    if name.startswith("sp:"):
        return TOKEN_GROUP
    if ":" in name:
        model = name.split(":", 1)[0]
        return MODEL_GROUPS.get(model, PREFIX_GROUPS.get(model, model))
    return DENSE_GROUPS.get(name, name)


def group_contributions(contrib: np.ndarray, feature_names: list[str]) -> tuple[list[str], np.ndarray]:
    """Sum contributions [n, n_features + 2] (features, bias, pool) by group.

    Returns (group names, [n, n_groups]); the last two groups are ``pool`` and ``bias``, so
    every row still sums to the explained raw score."""
    contrib = np.asarray(contrib, dtype=np.float64)
    nf = len(feature_names)
    if contrib.shape[1] != nf + 2:
        raise ValueError(f"{contrib.shape[1]} contribution columns for {nf} features (+ bias, pool)")
    groups = [feature_group(n) for n in feature_names]
    names = list(dict.fromkeys(groups))
    col = {g: i for i, g in enumerate(names)}
    out = np.zeros((len(contrib), len(names) + 2))
    idx = np.array([col[g] for g in groups], dtype=np.int64)
    for j in range(len(names)):
        out[:, j] = contrib[:, :nf][:, idx == j].sum(1)
    out[:, -2] = contrib[:, nf + 1]  # pool
    out[:, -1] = contrib[:, nf]  # bias
    return names + [POOL, BIAS], out


def base_guesses(base: dict[str, np.ndarray], labels: np.ndarray) -> list[dict[str, dict]]:
    """Per row: model -> {"label", "proba"} of its top guess (models that could not score left out)."""
    out: list[dict[str, dict]] = [{} for _ in range(len(next(iter(base.values()))) if base else 0)]
    for name in sorted(base):
        p = np.asarray(base[name], dtype=np.float64)
        ok = ~np.isnan(p).any(1)
        top = np.where(ok, np.nan_to_num(p).argmax(1), 0)
        for i in np.flatnonzero(ok):
            out[i][name] = {"label": str(labels[top[i]]), "proba": round(float(p[i, top[i]]), 4)}
    return out


def ancestor_guesses(refined_by: list, rows: np.ndarray) -> list[list[dict]]:
    """Per row: each ancestor stack's {"depth", "label", "proba"} (its top category at its depth)."""
    out: list[list[dict]] = [[] for _ in rows]
    for a, p in sorted(refined_by, key=lambda t: t[0].depth):
        p = np.asarray(p, dtype=np.float64)[rows]
        top = p.argmax(1)
        for i in range(len(rows)):
            out[i].append({"depth": int(a.depth), "label": str(a.labels[top[i]]),
                           "proba": round(float(p[i, top[i]]), 4)})
    return out


def why_text(guesses: dict[str, dict], groups: dict[str, float], ancestors: list[dict] = ()) -> str:
    """"linear_text: Mugs 0.91 | text: Mugs 0.55 | depth 1 stack: Kitchen 0.97 || text models +2.1, brand +0.8"."""
    left = " | ".join([f"{report_name(m)}: {g['label']} {g['proba']:.2f}" for m, g in
                       sorted(guesses.items(), key=lambda kv: -kv[1]["proba"])]
                      + [f"depth {a['depth']} stack: {a['label']} {a['proba']:.2f}" for a in ancestors])
    parts = sorted(((g, v) for g, v in groups.items() if g != BIAS), key=lambda kv: -abs(kv[1]))
    right = ", ".join(f"{g} {v:+.1f}" for g, v in parts[:SHOWN_GROUPS] if abs(v) >= 0.05)
    return f"{left} || {right}" if right else left


def add_reasons(clf, out: pd.DataFrame, base: dict[str, np.ndarray], passthrough,
                refined_by: list = ()) -> pd.DataFrame:
    """``why``/``why_json`` on every row of ``out`` (CatalogClassifier.route) not accepted at full
    depth; ``refined_by``: the (AncestorStack, probabilities) pairs that refined the leaf scores."""
    out["why"], out["why_json"] = None, None
    rows = np.flatnonzero(out["status"].astype(object).to_numpy() != "accepted")
    if not len(rows):
        return out
    labels = np.array(clf.labels_, dtype=object)
    index = {l: i for i, l in enumerate(clf.labels_)}
    cls = np.array([index[c] for c in out["model_category"].to_numpy()[rows]], dtype=np.int64)
    sub = {k: np.asarray(v)[rows] for k, v in base.items()}
    pt = passthrough.take(rows) if passthrough is not None else None
    contrib = clf.stack_.contributions(None, pt, base_proba=sub, classes=cls)
    names, grouped = group_contributions(contrib, clf.stack_.feature_names_)
    guesses = base_guesses(sub, labels)
    parents = ancestor_guesses(list(refined_by), rows)
    texts, blobs = [], []
    for i in range(len(rows)):
        groups = {g: float(v) for g, v in zip(names, grouped[i])}
        texts.append(why_text(guesses[i], groups, parents[i]))
        blob = {"class": str(labels[cls[i]]), "raw_score": float(grouped[i].sum()),
                "base": guesses[i], "groups": groups}
        if parents[i]:
            blob["ancestors"] = parents[i]
        blobs.append(json.dumps(blob, ensure_ascii=False))
    why, why_json = np.full(len(out), None, dtype=object), np.full(len(out), None, dtype=object)
    why[rows], why_json[rows] = texts, blobs
    out["why"], out["why_json"] = why, why_json
    return out
