"""Honest evaluation: stratified, grouped outer K-fold cross-validation.

Each outer fold trains the whole product (base models with their own inner out-of-fold
layer, meta-classifier, calibration, thresholds) on the training part only, then scores
the held-out part. Base models and peers are scored on the same held-out rows, so every
figure in the report is comparable and none comes from training data.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stacking import make_folds, route
from stacking.thresholds import select_for

from . import evaluation_hier as ev_hier
from .catalog.cleaning import title_key
from .classifier import CatalogClassifier
from .config import Config
from .evaluation_ablation import ablation_records, fold_ablations
from .features.container import ItemInputs
from .io_utils import atomic_write
from .features.text import catalog_texts
from .models.peers import TfidfLR
from .models.registry import report_name
from .reporting import (classification_metrics, plot_confusion_matrix,
                        plot_reliability_diagram, plot_risk_coverage, risk_coverage_curve)

TARGETS = (0.95, 0.98)


@dataclass
class CVResult:
    catalog: str
    level: int
    labels: list[str]
    y: np.ndarray
    proba: dict[str, np.ndarray]  # model name -> out-of-fold probabilities [n, C]
    accepted: dict[float, np.ndarray]  # target -> auto-accept mask of the product (stack + rules)
    fold: np.ndarray
    seconds: float
    per_fold: list[dict] = field(default_factory=list)
    protocol: str = "nested"  # or evaluation_oof.PROTOCOL
    final: np.ndarray | None = None  # category index the product outputs (a rule may force one)
    accepted_model: dict[float, np.ndarray] | None = None  # thresholds alone, no rules
    # stack_without_<base> -> probabilities [n, C] and target -> model-only accept mask
    ablation: dict[str, np.ndarray] = field(default_factory=dict)
    ablation_accepted: dict[str, dict[float, np.ndarray]] = field(default_factory=dict)
    # (variant, target) -> [category, status] of the climb (evaluation_hier); empty: flat only
    hier: dict = field(default_factory=dict)
    risk_delta: float = 0.05
    item_ids: np.ndarray | None = None  # the rows' input ids, in the order of ``y``


def cross_validate(items: pd.DataFrame, config: Config, catalog_name: str, image_root: str | None = None,
                   n_outer: int = 5, seed: int = 0, progress: bool = True, ablation: bool = True) -> CVResult:
    """``ablation``: also score the fold model's stack without each base model (meta re-fit only)."""
    t0 = time.time()
    probe = CatalogClassifier(config)
    labels_s = probe.labels_for(items)
    keep = labels_s.notna().to_numpy()
    items, labels_s = items.loc[keep].reset_index(drop=True), labels_s[keep].reset_index(drop=True)
    labels = sorted(labels_s.unique())
    y = labels_s.map({l: i for i, l in enumerate(labels)}).to_numpy()
    emb, _ = probe.embed_images(items, image_root, progress=progress)
    groups = np.array([title_key(t) for t in items["title"]], dtype=object)
    fold = make_folds(y, n_outer, seed, groups)
    n, C = len(y), len(labels)
    names = ["stack", "tfidf_lr"] + [report_name(b) for b in probe.base_names]
    proba = {m: np.full((n, C), np.nan) for m in names}
    accepted = {t: np.zeros(n, dtype=bool) for t in TARGETS}
    accepted_model = {t: np.zeros(n, dtype=bool) for t in TARGETS}
    final = np.full(n, -1)
    abl: dict[str, np.ndarray] = {}
    abl_acc: dict[str, dict[float, np.ndarray]] = {}
    label_index = {l: i for i, l in enumerate(labels)}
    per_fold, hier = [], ev_hier.new_store(n, TARGETS)
    bar = tqdm(range(n_outer), desc=f"CV {catalog_name} L{config.catalog.label_depth}", disable=not progress)
    for k in bar:
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        clf = CatalogClassifier(copy.deepcopy(config))
        clf.fit(items.iloc[tr], labels_s.iloc[tr], image_root, progress=False,
                embeddings=None if emb is None else emb[tr])
        # the fold's model may lack a class that is absent from its training part
        cols = np.array([labels.index(l) for l in clf.labels_])
        p, base, _ = clf.predict_proba(items.iloc[te], image_root, embeddings=None if emb is None else emb[te])
        proba["stack"][np.ix_(te, cols)] = p
        for b, pb in base.items():
            proba[report_name(b)][np.ix_(te, cols)] = pb
        if ablation:
            for m, (pa, acc_a) in fold_ablations(clf, items.iloc[tr], items.iloc[te], base, TARGETS, image_root,
                                                 None if emb is None else emb[tr],
                                                 None if emb is None else emb[te]).items():
                abl.setdefault(m, np.zeros((n, C)))[np.ix_(te, cols)] = pa
                for t, a in acc_a.items():
                    abl_acc.setdefault(m, {u: np.zeros(n, dtype=bool) for u in TARGETS})[t][te] = a
        peer = TfidfLR(seed=seed, classes=list(range(C))).fit(_texts(items.iloc[tr], config), y[tr])
        proba["tfidf_lr"][te] = peer.predict_proba(_texts(items.iloc[te], config))
        rec = {"fold": int(k), "n_test": int(len(te))}
        pred_global = cols[p.argmax(1)]  # fold-model class -> global class index
        for t in TARGETS:
            key = f"{int(t * 100):03d}"
            # the model alone: thresholds from the fold model's inner out-of-fold scores
            thr = select_for(config.stack, clf.stack_.y_, clf.stack_.oof_proba_, t)
            acc_m = route(p, thr)[2]
            accepted_model[t][te] = acc_m
            # the product as shipped: the same model routed with its rules
            clf.set_target_precision(t)
            routed = clf.route(items.iloc[te].reset_index(drop=True), p)
            acc = (routed["status"] == "accepted").to_numpy()
            ev_hier.put(hier, "stack", t, te, routed["category"], routed["status"])
            # flat view: a partially accepted row's output is its leaf guess, as for review rows
            leaf_out = routed["category"].where(routed["status"] != "accepted_partial", routed["model_category"])
            fin = leaf_out.map(lambda c: label_index.get(c, -1)).to_numpy()
            accepted[t][te], final[te] = acc, fin
            # a true class absent from this fold's training part simply counts as an error
            rec[f"coverage_at_{key}"] = float(acc.mean())
            rec[f"precision_at_{key}"] = float((fin[acc] == y[te][acc]).mean()) if acc.any() else None
            rec[f"model_only_coverage_at_{key}"] = float(acc_m.mean())
            rec[f"model_only_precision_at_{key}"] = (float((pred_global[acc_m] == y[te][acc_m]).mean())
                                                     if acc_m.any() else None)
        for t, routed in ev_hier.guaranteed_fold(clf, items.iloc[te].reset_index(drop=True), p, TARGETS).items():
            ev_hier.put(hier, ev_hier.GUARANTEED, t, te, routed["category"], routed["status"])
        per_fold.append(rec)
        bar.set_postfix(stack_acc=f"{(pred_global == y[te]).mean():.3f}")
    proba = {m: fill_missing(p) for m, p in proba.items()}
    return CVResult(catalog_name, config.catalog.label_depth, labels, y, proba, accepted, fold,
                    time.time() - t0, per_fold, final=final, accepted_model=accepted_model,
                    ablation=abl, ablation_accepted=abl_acc, hier=hier, risk_delta=config.stack.risk_delta,
                    item_ids=items["item_id"].astype(str).to_numpy())


def fill_missing(proba: np.ndarray) -> np.ndarray:
    """Rows a model could not score (no image) count as uniform guesses."""
    p = np.where(np.isnan(proba), 0.0, np.asarray(proba, dtype=np.float64))
    p[p.sum(1) == 0] = 1.0 / p.shape[1]
    return p


def _texts(items: pd.DataFrame, config: Config) -> ItemInputs:
    texts = catalog_texts(items, config.catalog)
    return ItemInputs(np.array(texts, dtype=object), np.array(texts, dtype=object))


def records(res: CVResult) -> list[dict]:
    """Flat records for reports/evaluation.json (one per model)."""
    out, true_labels = [], np.array(res.labels, dtype=object)[res.y]
    for m, p in res.proba.items():
        met = classification_metrics(res.y, p.argmax(1), res.labels)
        rec = {"catalog": res.catalog, "level": res.level, "model": m, "accuracy": met["accuracy"],
               "macro_f1": met["macro_f1"], "n_items": int(len(res.y)), "n_categories": len(res.labels),
               "cv": f"{len(np.unique(res.fold))}-fold, {res.protocol}"}
        if m == "stack":
            final = p.argmax(1) if res.final is None else res.final
            for t in TARGETS:
                acc = res.accepted[t]
                key = f"{int(t * 100):03d}"
                rec[f"coverage_at_{key}"] = float(acc.mean())
                rec[f"precision_at_{key}"] = float((final[acc] == res.y[acc]).mean()) if acc.any() else None
                if res.accepted_model is not None:
                    am = res.accepted_model[t]
                    rec[f"model_only_coverage_at_{key}"] = float(am.mean())
                    rec[f"model_only_precision_at_{key}"] = (float((p.argmax(1)[am] == res.y[am]).mean())
                                                             if am.any() else None)
            rec["per_fold"] = res.per_fold
            rec["cv_seconds"] = round(res.seconds, 1)
            if res.hier:
                rec.update(ev_hier.hier_fields(res.hier, "stack", true_labels, TARGETS))
        rec["per_category"] = met["per_category"]
        out.append(rec)
        if m == "stack" and res.hier:
            out.append(ev_hier.guaranteed_record(rec, res.hier, true_labels, res.fold, TARGETS, res.risk_delta))
    if res.ablation:
        stack = next(r for r in out if r["model"] == "stack")
        shared = {k: stack[k] for k in ("catalog", "level", "n_items", "n_categories", "cv")}
        out += ablation_records(shared, res.y, res.labels, res.ablation, res.ablation_accepted, stack["macro_f1"])
    return out


def save_pictures(res: CVResult, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{res.catalog}_L{res.level}"
    p = res.proba["stack"]
    paths = [plot_confusion_matrix(res.y, p.argmax(1), res.labels, out_dir / f"{stem}_confusion.png")]
    curves = {m: risk_coverage_curve(res.y, pm) for m, pm in res.proba.items()}
    points = {}
    for t in TARGETS:
        acc = res.accepted[t]
        if acc.any():
            points[f"stack @ {t}"] = (float(acc.mean()), float((p.argmax(1)[acc] != res.y[acc]).mean()))
    paths.append(plot_risk_coverage(curves, out_dir / f"{stem}_risk_coverage.png", target_points=points))
    plot_reliability_diagram(res.y, p, out_dir / f"{stem}_reliability.png")
    paths.append(out_dir / f"{stem}_reliability.png")
    if res.hier:
        paths.append(ev_hier.save_hier_picture(res, out_dir, TARGETS))
    return [Path(x) for x in paths]


def save_scores(res: CVResult, out_dir: str | Path) -> Path:
    """Every model's held-out probabilities with the rows' ids, labels and folds, one compressed
    ``<catalog>_L<level>.npz`` per level, for analyses the report does not make (routing policies,
    error review) without re-running the folds. Arrays: ``item_id``, ``label`` (class index),
    ``fold``, ``labels`` (class names), ``models`` and one ``proba_<model>`` [n, C] float32 each."""
    scored = {**res.proba, **res.ablation}
    models = sorted(res.proba) + sorted(res.ablation)
    arrays = {"item_id": np.asarray(res.item_ids, dtype=str) if res.item_ids is not None else np.array([], dtype=str),
              "label": np.asarray(res.y), "fold": np.asarray(res.fold),
              "labels": np.asarray(res.labels, dtype=str), "models": np.asarray(models, dtype=str),
              "protocol": np.asarray(res.protocol)}
    for m in models:
        arrays[f"proba_{m}"] = np.asarray(scored[m], dtype=np.float32)
    path = Path(out_dir) / f"{res.catalog}_L{res.level}.npz"

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)
