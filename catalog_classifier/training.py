"""Pipeline stages behind ``train`` and ``evaluate``: plain functions over the facade."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .classifier import CatalogClassifier
from .config import Config
from .io_utils import atomic_write_json
from .reporting import (classification_metrics, coverage_precision, plot_confusion_matrix,
                        plot_reliability_diagram, plot_risk_coverage, risk_coverage_curve)


def oof_metrics(clf: CatalogClassifier) -> dict:
    """Held-out figures of a trained model: meta predictions out of fold, never in-sample."""
    y, p = clf.stack_.y_, clf.stack_.oof_proba_
    m = classification_metrics(y, p.argmax(1), clf.labels_)
    cov, prec = coverage_precision(y, p, clf.stack_.thresholds_)
    out = {"oof_accuracy": m["accuracy"], "oof_macro_f1": m["macro_f1"], "oof_coverage": cov,
           "oof_precision_accepted": prec, "n_items": int(len(y)), "n_categories": len(clf.labels_),
           "target_precision": clf.config.stack.target_precision}
    for name, pb in clf.stack_.base_oof_.items() if hasattr(clf.stack_, "base_oof_") else []:
        ok = ~np.isnan(pb).any(1)
        if ok.any():
            out[f"oof_{name}_accuracy"] = float((pb[ok].argmax(1) == y[ok]).mean())
    return out


def oof_pictures(clf: CatalogClassifier, out_dir: Path) -> list[Path]:
    y, p = clf.stack_.y_, clf.stack_.oof_proba_
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_confusion_matrix(y, p.argmax(1), clf.labels_, out_dir / "confusion_matrix.png")]
    curves = {"stack": risk_coverage_curve(y, p)}
    for name, pb in getattr(clf.stack_, "base_oof_", {}).items():
        q = np.where(np.isnan(pb), 1.0 / pb.shape[1], pb)
        curves[name] = risk_coverage_curve(y, q)
    paths.append(plot_risk_coverage(curves, out_dir / "risk_coverage.png"))
    plot_reliability_diagram(y, p, out_dir / "reliability.png")
    paths.append(out_dir / "reliability.png")
    return [Path(x) for x in paths]


def train_and_log(cat, cfg: Config, out: Path, register: bool = True, progress: bool = True) -> dict:
    clf = CatalogClassifier(cfg).fit(cat.items, image_root=cat.image_root, progress=progress)
    clf.save(out)
    metrics = oof_metrics(clf)
    pics = oof_pictures(clf, out / "reports")
    atomic_write_json(metrics, out / "reports" / "oof_metrics.json")
    summary = {"model_dir": str(out), "labels": len(clf.labels_), "trained_on": len(cat.items),
               "rejected_rows": len(cat.rejected), **{k: round(v, 4) if isinstance(v, float) else v
                                                      for k, v in metrics.items()}}
    if clf.disabled_rules_:
        summary["disabled_rules"] = clf.disabled_rules_
    if register and cfg.tracking.enabled:
        from .pyfunc import catalog_example
        from .tracking import log_model_version

        params = {"catalog": cat.source, "adapter": cat.adapter, "label_depth": cfg.catalog.label_depth,
                  "base_models": ",".join(clf.base_names), "n_folds": cfg.stack.n_folds,
                  "target_precision": cfg.stack.target_precision, "rules": clf.rules.fingerprint()[:16]}
        info = log_model_version(clf, out, metrics, params, cfg.tracking, artifacts=pics,
                                 input_example=catalog_example(cat.source))
        summary.update({"run_id": info["run_id"], "model_version": info["version"]})
        atomic_write_json({"name": cfg.tracking.registered_model, "version": info["version"],
                           "run_id": info["run_id"]}, out / "registry.json")
        _promote_first(cfg, info["version"])
    return summary


def _promote_first(cfg: Config, version) -> None:
    """The first registered version becomes champion, so `nightly` has a model to use."""
    from .nightly.lifecycle.aliases import current_champion, promote

    if version is not None and current_champion(cfg) is None:
        promote(cfg, int(version), reason="first registered version")


def evaluate_and_report(cat, cfg: Config, name: str, levels: list[int], folds: int, report: Path,
                        log_mlflow: bool = True, protocol: str = "nested", ablation: bool = True,
                        scores_dir: Path | None = None) -> list[dict]:
    """Evaluate each label level (nested CV, or the one-fit out-of-fold protocol) and merge
    the records into ``report``; pictures go to ``report``'s folder/figures. ``ablation``: also
    the stack without each base model (``stack_without_<base>`` records). ``scores_dir``: also
    every model's held-out probabilities per level (``evaluation.save_scores``)."""
    from .evaluation import cross_validate, records, save_pictures, save_scores
    from .evaluation_oof import oof_cross_validate

    all_recs, pics = [], []
    for level in tqdm(levels, desc="levels", disable=len(levels) < 2):
        lc = cfg.with_overrides(catalog={"label_depth": level})
        if protocol == "oof":
            res, _ = oof_cross_validate(cat.items, lc.with_overrides(stack={"n_folds": folds}), name,
                                        cat.image_root, ablation=ablation)
        else:
            res = cross_validate(cat.items, lc, name, cat.image_root, n_outer=folds, seed=cfg.stack.seed,
                                 ablation=ablation)
        all_recs += records(res)
        pics += save_pictures(res, report.parent / "figures")
        atomic_write_json(_merge(report, records(res)), report)  # a finished level is never lost
        if scores_dir is not None:
            save_scores(res, scores_dir)
    if log_mlflow and cfg.tracking.enabled:
        from .tracking import setup

        mlflow = setup(cfg.tracking, experiment=cfg.tracking.experiment + "-evaluation")
        with mlflow.start_run(run_name=f"cv-{name}"):
            for r in all_recs:
                for key in ("accuracy", "macro_f1", "coverage_at_095", "precision_at_095",
                            "coverage_at_098", "precision_at_098", "coverage_any_depth_at_095",
                            "coverage_any_depth_at_098", "coverage_full_depth_at_095",
                            "coverage_full_depth_at_098", "hierarchical_precision_at_095",
                            "hierarchical_precision_at_098", "mean_accepted_depth"):
                    if r.get(key) is not None:
                        mlflow.log_metric(f"L{r['level']}.{r['model']}.{key}", float(r[key]))
            for p in pics:
                mlflow.log_artifact(str(p), artifact_path="figures")
            mlflow.log_artifact(str(report))
    return [{k: v for k, v in r.items() if k not in ("per_category", "per_fold")} for r in all_recs]


def _merge(report: Path, new: list[dict]) -> list[dict]:
    old = json.loads(report.read_text()) if report.exists() else []
    keys = {(r["catalog"], r["level"], r["model"]) for r in new}
    kept = [r for r in old if (r["catalog"], r["level"], r["model"]) not in keys]
    return sorted(kept + new, key=lambda r: (r["catalog"], r["level"], r["model"]))
