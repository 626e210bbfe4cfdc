"""Retrain when the champion's accuracy degrades on labels it has never seen.

1. Fresh labels: store labels that reached the store after the champion was trained, joined
   to catalog rows. Too few to judge: nothing happens.
2. The champion's score on them (``lifecycle.metric``) is compared with ``floor`` and with its own
   recorded score (the ``metric.<m>`` / ``metric.oof_<m>`` tag logged at training) minus ``tolerance``.
3. Degraded: the fresh labels are split by near-duplicate group; one part is held out and never
   trained on. A challenger trains on every other label (the catalog's own labels, overridden by
   the store's) and both models are scored on the same held-out rows.
4. The challenger is registered and promoted only if it wins by ``margin``; otherwise the run
   ends with exit code 1 and an alert naming the figures. Every step is logged to MLflow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ...config import Config
from . import aliases
from ..review.labels import current_labels, labeled_items, read_store, to_utc
from ...catalog.cleaning import title_key


@dataclass
class RetrainResult:
    decision: str  # not_enough_labels | healthy | promoted | champion_kept
    exit_code: int
    message: str
    champion_version: int
    challenger_version: int | None = None
    figures: dict = field(default_factory=dict)


def champion_record(cfg: Config) -> dict:
    """Version, run, training time and recorded score of the current champion."""
    version = aliases.current_champion(cfg)
    if version is None:
        raise aliases.LifecycleError(
            f"{cfg.tracking.registered_model} has no '{cfg.lifecycle.alias}' alias: train a model first "
            "(or `catalog-classifier models promote VERSION`)")
    c = aliases.client(cfg)
    mv = c.get_model_version(cfg.tracking.registered_model, str(version))
    tags = dict(mv.tags or {})
    trained = to_utc(tags["trained_at"] if tags.get("trained_at") else
                     pd.Timestamp(mv.creation_timestamp, unit="ms"))
    m = cfg.lifecycle.metric
    recorded, key = None, None
    for k in (m, f"oof_{m}"):
        if f"metric.{k}" in tags:
            recorded, key = float(tags[f"metric.{k}"]), k
            break
    if recorded is None and mv.run_id:
        run_metrics = c.get_run(mv.run_id).data.metrics
        key = next((k for k in (m, f"oof_{m}") if k in run_metrics), None)
        recorded = float(run_metrics[key]) if key else None
    return {"version": version, "run_id": mv.run_id, "trained_at": trained, "recorded": recorded,
            "recorded_key": key}


def split_holdout(items: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows; near-duplicates (same title key) fall on the same side."""
    keys = np.array([title_key(t) or f"\0{i}" for i, t in zip(items["item_id"], items["title"])], dtype=object)
    groups = pd.unique(keys)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    sizes = pd.Series(keys).value_counts()
    target, taken, chosen = fraction * len(items), 0, set()
    for g in groups[order]:
        if taken >= target:
            break
        chosen.add(g)
        taken += int(sizes[g])
    return np.isin(keys, list(chosen))


def training_labels(clf, catalog_items: pd.DataFrame, store_df: pd.DataFrame) -> pd.Series:
    """The catalog's own labels (as the challenger's config cuts them), overridden by store labels."""
    base = clf.labels_for(catalog_items) if "category" in catalog_items else \
        pd.Series([None] * len(catalog_items), index=catalog_items.index, dtype=object)
    store = current_labels(store_df).set_index("item_id")["label"]
    from_store = catalog_items["item_id"].map(store)
    return from_store.where(from_store.notna(), base).astype(object)


def retrain(cfg: Config, catalog_items: pd.DataFrame, image_root: str | None = None, *,
            store: str | Path | None = None, force: bool = False, out_dir: str | Path | None = None,
            progress: bool = False, say=print) -> RetrainResult:
    """Judge the champion on fresh labels; train, compare and maybe promote a challenger."""
    from ...classifier import CatalogClassifier
    from ...tracking import load_model

    lc, metric = cfg.lifecycle, cfg.lifecycle.metric
    champ = champion_record(cfg)
    v = champ["version"]
    clf = load_model(f"models:/{cfg.tracking.registered_model}/{v}", cfg.tracking, cfg.cache).clf
    store_df = read_store(store or cfg.labels.store)
    items = catalog_items.drop_duplicates("item_id").reset_index(drop=True)
    fresh_items, fresh_labels = labeled_items(store_df, items, since=champ["trained_at"])
    known = fresh_labels.isin(clf.labels_).to_numpy()
    fresh_items, fresh_labels = fresh_items[known].reset_index(drop=True), fresh_labels[known].reset_index(drop=True)
    fig: dict = {"champion_version": v, "n_fresh": len(fresh_items), "recorded_score": champ["recorded"],
                 "floor": lc.floor, "tolerance": lc.tolerance, "margin": lc.margin, "metric": metric}
    say(f"champion v{v} trained at {champ['trained_at']:%Y-%m-%d %H:%M:%S} UTC; "
        f"{len(fresh_items)} labeled catalog items arrived since")
    if len(fresh_items) < lc.min_fresh_labels:
        return _finish(cfg, RetrainResult("not_enough_labels", 0, (
            f"only {len(fresh_items)} fresh labels (< min_fresh_labels {lc.min_fresh_labels}): "
            "too few to judge the champion; nothing done"), v, figures=fig))

    score = float(clf.evaluate(fresh_items, fresh_labels, image_root)[metric])
    fig["champion_fresh_score"] = score
    why = _degradation(score, champ["recorded"], lc)
    say(f"champion v{v} {metric} on {len(fresh_items)} fresh labels: {score:.4f} "
        f"(recorded {_f(champ['recorded'])}, floor {lc.floor}, tolerance {lc.tolerance})")
    if not why and not force:
        return _finish(cfg, RetrainResult("healthy", 0, (
            f"no degradation: champion v{v} {metric} {score:.4f} on {len(fresh_items)} fresh labels "
            f"(floor {lc.floor}, recorded {_f(champ['recorded'])} - tolerance {lc.tolerance}); nothing to do"),
            v, figures=fig))
    why = why or "forced"

    hold = split_holdout(fresh_items, lc.holdout_fraction, lc.seed)
    hold_items, hold_labels = fresh_items[hold].reset_index(drop=True), fresh_labels[hold].reset_index(drop=True)
    hold_keys = {title_key(t) for t in hold_items["title"]} - {""}
    challenger = CatalogClassifier(cfg)
    y = training_labels(challenger, items, store_df)
    leak = items["item_id"].isin(set(hold_items["item_id"])) | items["title"].map(title_key).isin(hold_keys)
    y[leak.to_numpy()] = None
    fig.update({"n_holdout": len(hold_items), "n_train": int(y.notna().sum())})
    say(f"degraded ({why}): training a challenger on {fig['n_train']} labels, "
        f"{len(hold_items)} fresh labels held out")
    challenger.fit(items, y, image_root=image_root, progress=progress)

    both = hold_labels.isin(set(challenger.labels_) & set(clf.labels_)).to_numpy()
    hi, hl = hold_items[both].reset_index(drop=True), hold_labels[both].reset_index(drop=True)
    m_champ = clf.evaluate(hi, hl, image_root)
    m_chall = challenger.evaluate(hi, hl, image_root)
    a, b = float(m_champ[metric]), float(m_chall[metric])
    fig.update({"n_compared": len(hi), "champion_holdout_score": a, "challenger_holdout_score": b})
    say(f"held-out {metric} on {len(hi)} fresh labels: champion v{v} {a:.4f}, challenger {b:.4f}")
    wins = b >= a + lc.margin
    out = Path(out_dir or Path("models") / f"challenger-{time.strftime('%Y%m%d-%H%M%S')}")
    challenger.save(out)
    info = _log_challenger(cfg, challenger, out, m_chall, fig, register=wins)
    fig["challenger_run_id"] = info["run_id"]
    if not wins:
        return _finish(cfg, RetrainResult("champion_kept", 1, (
            f"ALERT: champion v{v} degraded ({why}) and the challenger is not better by the margin: "
            f"held-out {metric} challenger {b:.4f} vs champion {a:.4f} (needs >= {a + lc.margin:.4f}) on "
            f"{len(hi)} fresh labels; champion kept, challenger saved in {out} (run {info['run_id']})"),
            v, figures=fig))
    reason = (f"retrain: champion v{v} {metric} {score:.4f} on {len(fresh_items)} fresh labels ({why}); "
              f"challenger {b:.4f} vs champion {a:.4f} on {len(hi)} held-out labels (margin {lc.margin})")
    aliases.promote(cfg, info["version"], reason=reason, action="retrain")
    return _finish(cfg, RetrainResult("promoted", 0, f"promoted challenger v{info['version']}: {reason}", v,
                                      info["version"], figures=fig))


def _degradation(score: float, recorded: float | None, lc) -> str:
    if score < lc.floor:
        return f"{score:.4f} < floor {lc.floor}"
    if recorded is not None and score < recorded - lc.tolerance:
        return f"{score:.4f} < recorded {recorded:.4f} - tolerance {lc.tolerance}"
    return ""


def _log_challenger(cfg: Config, clf, model_dir: Path, m: dict, fig: dict, register: bool) -> dict:
    from ...tracking import log_model_version
    from ...training import oof_metrics

    metrics = {k: m[k] for k in ("accuracy", "macro_f1", "coverage", "precision_accepted") if k in m}
    metrics.update({f"holdout_{k}": v for k, v in metrics.items()})
    metrics.update(oof_metrics(clf))
    params = {"trigger": "retrain", "champion_version": fig["champion_version"], "n_train": fig["n_train"],
              "n_holdout": fig["n_holdout"], "label_depth": clf.config.catalog.label_depth,
              "base_models": ",".join(clf.base_names)}
    return log_model_version(clf, model_dir, metrics, params, cfg.tracking, register=register,
                             tags={"role": "challenger", "champion_version": str(fig["champion_version"])})


def _finish(cfg: Config, res: RetrainResult) -> RetrainResult:
    """One MLflow run per retrain check: the decision, the figures, the message."""
    if cfg.tracking.enabled:
        from ...tracking import setup

        mlflow = setup(cfg.tracking, experiment=cfg.tracking.experiment + "-retrain")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        with mlflow.start_run(run_name=f"retrain-{stamp}"):
            mlflow.set_tags({"decision": res.decision, "champion_version": str(res.champion_version),
                             "challenger_version": str(res.challenger_version or "")})
            mlflow.log_params({k: str(v) for k, v in res.figures.items()
                               if k in ("metric", "floor", "tolerance", "margin", "champion_version")})
            mlflow.log_metrics({k: float(v) for k, v in res.figures.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None
                                and k not in ("floor", "tolerance", "margin", "champion_version")})
            mlflow.log_text(res.message, "retrain.txt")
            mlflow.log_dict({**res.figures, "decision": res.decision, "message": res.message},
                            "retrain.json")
    return res


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
