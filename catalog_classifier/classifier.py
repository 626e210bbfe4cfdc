"""The facade: ``CatalogClassifier.fit / predict / evaluate / save / load``.

It turns the canonical item table into base-model inputs (texts, cached image
embeddings) and passthrough features (brand, domain, price, sentencepiece title tokens),
delegates the stacking to ``stacking.StackedClassifier``, then routes every item by its
category's threshold and the keyword rules.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from stacking import Passthrough, StackedClassifier, StackParams
from stacking.hierarchy import HierarchicalRouter, stage_delta
from stacking.thresholds import batch_ratio

from . import ancestors as anc
from . import base_cache
from . import events
from . import models as model_registry
from .catalog.cleaning import title_key
from .catalog.labels import make_labels
from .catalog.schema import CATEGORY_SEP
from .config import Config
from .explain import add_reasons
from .features.container import ItemInputs
from .features.tabular import CATEGORICAL, FEATURES, TabularEncoder, norm_key
from .features.text import catalog_texts, normalize_text
from .features.tokens import TitleTokenizer
from .routing import route_items
from .rules import RuleSet
from .versions import library_versions

log = logging.getLogger(__name__)
# 2: base models as estimators (params.json per base model, [models] config section)
# 3: with stacks at ancestor depths (ancestors/); a model without them is still written as 2
FORMAT_VERSION = 2
FORMAT_WITH_ANCESTORS = 3
FORMATS_READ = (FORMAT_VERSION, FORMAT_WITH_ANCESTORS)


class CatalogClassifier:
    def __init__(self, config: Config | None = None, rules: RuleSet | None = None):
        self.config = config or Config()
        self.rules = rules

    # ----------------------------------------------------------- features
    def _embedder(self, image_root):
        """One embedder per image root, kept: the CNN loads once, not once per chunk."""
        cache = self.__dict__.setdefault("_embedders", {})
        c = self.config.image
        key = (image_root, c.cache_dir, c.cache_layout, c.device, c.batch_size, c.runtime, c.precision, c.export_dir,
               self.config.cache.max_idle_days)
        if key not in cache:
            cache[key] = self._new_embedder(image_root)
        return cache[key]

    def _new_embedder(self, image_root):
        from .features.embeddings import ImageEmbedder

        c = self.config
        cfg = c.image
        if getattr(self, "model_dir_", None) is not None and (self.model_dir_ / "backbone.pth").exists():
            # serve with exactly the backbone weights this version was trained with
            cfg = type(cfg)(**{**vars(cfg), "weights_path": str(self.model_dir_ / "backbone.pth")})
        return ImageEmbedder(cfg, image_root=image_root, max_bytes=c.catalog.max_image_bytes,
                             max_pixels=c.catalog.max_image_pixels, max_idle_days=c.cache.max_idle_days)

    def embed_images(self, items: pd.DataFrame, image_root: str | None, progress: bool = False):
        """Image embeddings (cached by content hash) and per-row reasons for missing ones."""
        if not self.config.image.enabled or "image_head" not in self.base_names:
            return None, [None] * len(items)
        if items["image"].isna().all():  # NaN rows, not None: has_image must read 0, as in a mixed chunk
            from .features.embeddings import embedding_dim

            return np.full((len(items), embedding_dim), np.nan, dtype=np.float32), ["no image"] * len(items)
        res = self._embedder(image_root).embed(items["image"].tolist(), progress=progress)
        self.last_embedding_stats_ = {"computed": res.n_computed, "cached": res.n_cached}
        return res.vectors, list(res.reasons)

    def inputs(self, items: pd.DataFrame, image_root: str | None = None, progress: bool = False,
               embeddings: np.ndarray | None = None, image_reasons: list | None = None
               ) -> tuple[ItemInputs, list]:
        """Base-model inputs. ``embeddings`` (with their ``image_reasons``) computed elsewhere,
        e.g. by the Ray engine's CNN actors, are used as they are."""
        texts = np.array(catalog_texts(items, self.config.catalog), dtype=object)
        titles = np.array([normalize_text(t, 512) for t in items["title"]], dtype=object)
        reasons = list(image_reasons) if image_reasons is not None else [None] * len(items)
        if embeddings is None:
            embeddings, reasons = self.embed_images(items, image_root, progress)
        brands = np.array([norm_key(b) or "" for b in items["brand"]], dtype=object)
        return ItemInputs(texts, titles, embeddings, brands), reasons

    def _passthrough(self, items: pd.DataFrame, X: ItemInputs) -> Passthrough:
        has_image = None if X.embeddings is None else ~np.isnan(X.embeddings).any(1)
        dense = self.tabular_.transform(items, has_image)
        return Passthrough(dense, list(FEATURES), list(CATEGORICAL),
                           self.tokenizer_.counts(list(X.titles)), self.tokenizer_.names())

    def passthrough(self, items: pd.DataFrame, image_root: str | None = None,
                    embeddings: np.ndarray | None = None) -> Passthrough:
        """The meta layer's passthrough features of these items, built as fit and predict
        build them (e.g. to re-fit the meta layer with ``stack_.without``)."""
        X, _ = self.inputs(items, image_root, embeddings=embeddings)
        return self._passthrough(items, X)

    @property
    def base_names(self) -> list[str]:
        names = list(self.config.stack.base_models)
        if not self.config.image.enabled and "image_head" in names:
            names.remove("image_head")
        return names

    def _stack_params(self) -> StackParams:
        """The stack's parameters; climbing, the guarantee mode's risk is split over the leaf
        stage and each ancestor depth (``stacking.hierarchy.stage_delta``): the stack's leaf
        thresholds and the router both test at that share."""
        p = self.config.stack.stack_params()
        if self.config.stack.hierarchical:
            p.risk_delta = stage_delta(self.labels_, p.risk_delta, CATEGORY_SEP)
        return p

    # ---------------------------------------------------------------- fit
    def labels_for(self, items: pd.DataFrame) -> pd.Series:
        c = self.config.catalog
        return make_labels(items["category"], c.label_depth, c.min_items_per_category)

    def fit(self, items: pd.DataFrame, labels: pd.Series | None = None, image_root: str | None = None,
            progress: bool = True, embeddings: np.ndarray | None = None) -> "CatalogClassifier":
        """Train on the items that carry a label; unlabeled rows are ignored."""
        say = (lambda m: log.info(m)) if not progress else _printer()
        labels = self.labels_for(items) if labels is None else labels
        keep = labels.notna().to_numpy()
        if keep.sum() < self.config.stack.n_folds * 2:
            raise ValueError(f"only {int(keep.sum())} labeled items: too few to train")
        items = items.loc[keep].reset_index(drop=True)
        labels = labels[keep].reset_index(drop=True)
        if embeddings is not None:
            embeddings = embeddings[keep]
        self.labels_ = sorted(labels.unique())
        index = {l: i for i, l in enumerate(self.labels_)}
        y = labels.map(index).to_numpy(dtype=np.int64)
        say(f"training on {len(items)} items, {len(self.labels_)} categories")
        with events.stage("fit.inputs"):
            X, _ = self.inputs(items, image_root, progress=progress, embeddings=embeddings)
            self.tokenizer_ = TitleTokenizer.train(list(X.titles), self.config.stack.sp_vocab_size,
                                                   seed=self.config.stack.seed)
            self.tabular_ = TabularEncoder(self.config.stack.min_brand_count).fit(items)
            passthrough = self._passthrough(items, X)
        groups = np.array([title_key(t) for t in X.titles], dtype=object)
        with events.stage("fit.stack"):
            self.stack_ = self._new_stack(say).fit(X, y, len(self.labels_), groups=groups, passthrough=passthrough)
        with events.stage("fit.ancestors"):
            self.ancestors_ = anc.fit_ancestors(self.labels_, y, self.config.stack.ancestor_depths,
                                                lambda: self._new_stack(say), X, groups, passthrough,
                                                self.stack_.fold_, say)
            anc.refine_oof(self.stack_, self.ancestors_)
        with events.stage("fit.rules"):
            if self.rules is None:
                self.rules = _load_rules(self.config.rules.rules_dir)
            self.rules, self.disabled_rules_ = _rules_for(self.rules, self.labels_)
            for rid, why in self.disabled_rules_.items():
                say(f"rule {rid} disabled for this model: {why}")
            # rows a rule routes are never decided by the model: they must not set its thresholds
            oof_pred = list(np.array(self.labels_, dtype=object)[self.stack_.oof_proba_.argmax(1)])
            fired = self.rules.apply(items.reset_index(drop=True), oof_pred)
            self.stack_.set_threshold_rows(fired["rule_action"].isna().to_numpy())
        self.hier_ = self._fit_hierarchy() if self.config.stack.hierarchical else None
        self.versions_ = library_versions()
        return self

    def _new_stack(self, say) -> StackedClassifier:
        estimators = {n: model_registry.create(n, self.config) for n in self.base_names}
        return StackedClassifier(estimators, self._stack_params(), progress=say,
                                 num_threads=_num_threads(), phase=events.stage)

    # ------------------------------------------------------------ predict
    def predict_proba(self, items: pd.DataFrame, image_root: str | None = None, progress: bool = False,
                      embeddings: np.ndarray | None = None, image_reasons: list | None = None
                      ) -> tuple[np.ndarray, dict, list]:
        """Class probabilities, base-model probabilities and per-row image reasons.

        A failure raises StageError naming the stage (featurize, predict), so the nightly
        job can tell which rows to reject and why.
        """
        proba, base, reasons, _, _ = self._scores(items, image_root, progress, embeddings, image_reasons)
        return proba, base, reasons

    def _scores(self, items, image_root, progress, embeddings, image_reasons):
        """predict_proba's parts plus what the reasons need: the passthrough features and the
        (ancestor stack, its probabilities) pairs that refined the leaf stack's."""
        with _stage("featurize"), events.stage("predict.inputs"):
            X, reasons = self.inputs(items, image_root, progress, embeddings, image_reasons)
            passthrough = self._passthrough(items, X)
        with _stage("predict"):
            # the text models' rows from their content cache for a loaded model version (base_cache.py)
            base = base_cache.serve(self, self.stack_, X, "stack")  # one predict.base stage per model
            with events.stage("predict.meta"):
                proba = self.stack_.predict_proba(X, passthrough, base_proba=base)
            ancestors = getattr(self, "ancestors_", [])
            anc_proba = anc.ancestor_proba(ancestors, X, passthrough, [  # one predict.base stage per model
                base_cache.serve(self, a.stack, X, f"ancestors/depth{a.depth}") for a in ancestors])
            proba = anc.refine(proba, ancestors, anc_proba)
        return proba, base, reasons, passthrough, list(zip(ancestors, anc_proba))

    def predict(self, items: pd.DataFrame, image_root: str | None = None, progress: bool = False,
                embeddings: np.ndarray | None = None, image_reasons: list | None = None) -> pd.DataFrame:
        """One row per item: category, confidence, top-3, status, reason, rule, and for every row
        not accepted at full depth ``why``/``why_json`` (explain.add_reasons).

        A failure raises StageError naming the stage (featurize, predict, route, explain).
        """
        proba, base, img_reasons, passthrough, refined_by = self._scores(items, image_root, progress,
                                                                         embeddings, image_reasons)
        with _stage("route"), events.stage("predict.route"):
            out = self.route(items, proba, img_reasons)
        with _stage("explain"), events.stage("predict.explain"):
            return add_reasons(self, out, base, passthrough, refined_by)

    def route(self, items: pd.DataFrame, proba: np.ndarray, image_reasons: list | None = None) -> pd.DataFrame:
        """Route by the climb (deepest accepted category) or, without hierarchy data (models
        saved before it, ``stack.hierarchical`` off), by the flat per-category thresholds."""
        hier = getattr(self, "hier_", None) if self.config.stack.hierarchical else None
        return route_items(items, proba, self.labels_, self.stack_.thresholds_, hier, self.rules, image_reasons)

    def set_target_precision(self, target: float, method: str | None = None) -> None:
        """Re-choose the thresholds (flat and ancestors) for another target, optionally in
        another ``stack.threshold_method``, on the stored out-of-fold scores."""
        if method is not None:
            StackParams(threshold_method=method)  # the one validation of the value
            self.stack_.params.threshold_method = method
            self.config.stack.threshold_method = method
        self.stack_.set_target_precision(target)
        self.config.stack.target_precision = target
        if getattr(self, "hier_", None) is not None:
            self.hier_ = self._fit_hierarchy()

    def _fit_hierarchy(self) -> HierarchicalRouter:
        """Ancestor thresholds on the rows that chose the flat thresholds (rule-free, out of fold)."""
        st, p = self.stack_, self.stack_.params
        m = st.threshold_rows_
        return HierarchicalRouter(p.target_precision, p.min_support, self.config.stack.ancestor_confidence,
                                  p.threshold_method, p.risk_delta, CATEGORY_SEP,
                                  batch_ratio(p, int(m.sum()))).fit(
                                      self.labels_, st.y_[m], st.oof_proba_[m], st.thresholds_)

    # ----------------------------------------------------------- evaluate
    def evaluate(self, items: pd.DataFrame, labels: pd.Series | None = None,
                 image_root: str | None = None) -> dict:
        """Metrics of this (already trained) model on labeled items it was not trained on."""
        from .reporting import classification_metrics, coverage_precision

        labels = self.labels_for(items) if labels is None else labels
        known = labels.isin(self.labels_).to_numpy()
        items, labels = items.loc[known].reset_index(drop=True), labels[known].reset_index(drop=True)
        proba, _, _ = self.predict_proba(items, image_root)
        y = labels.map({l: i for i, l in enumerate(self.labels_)}).to_numpy()
        m = classification_metrics(y, proba.argmax(1), self.labels_)
        cov, prec = coverage_precision(y, proba, self.stack_.thresholds_)
        m.update({"coverage": cov, "precision_accepted": prec, "n_unknown_labels": int((~known).sum())})
        return m

    # ---------------------------------------------------------- save/load
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.stack_.save(tmp / "stack")
        (tmp / "tokenizer.model").write_bytes(self.tokenizer_.model_proto)
        (tmp / "tabular.json").write_text(json.dumps(self.tabular_.to_dict(), ensure_ascii=False))
        (tmp / "labels.json").write_text(json.dumps(self.labels_, ensure_ascii=False, indent=1))
        (tmp / "config.json").write_text(self.config.dumps())
        (tmp / "rules.json").write_text(json.dumps(self.rules.to_dict(), ensure_ascii=False, indent=1))
        thr = {l: (None if not np.isfinite(t) else float(t)) for l, t in zip(self.labels_, self.stack_.thresholds_)}
        (tmp / "thresholds.json").write_text(json.dumps(
            {"target_precision": self.config.stack.target_precision, "thresholds": thr}, indent=1))
        if getattr(self, "hier_", None) is not None:  # absent: the model routes flat
            (tmp / "hierarchy.json").write_text(json.dumps(self.hier_.to_dict(), ensure_ascii=False, indent=1))
        ancestors = getattr(self, "ancestors_", [])
        if ancestors:
            anc.save_ancestors(tmp / "ancestors", ancestors)
        (tmp / "versions.json").write_text(json.dumps(
            {**self.versions_, "format": FORMAT_WITH_ANCESTORS if ancestors else FORMAT_VERSION}, indent=1))
        if "image_head" in self.base_names and self.config.image.enabled:
            from .features.backbone import weights_path

            src = (self.model_dir_ / "backbone.pth") if getattr(self, "model_dir_", None) else None
            src = src if src is not None and src.exists() else Path(weights_path(self.config.image))
            shutil.copyfile(src, tmp / "backbone.pth")
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)  # a half-written model directory never carries the final name
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CatalogClassifier":
        path = Path(path)
        if not (path / "stack" / "stack.json").exists():
            raise FileNotFoundError(f"{path} is not a saved catalog-classifier model")
        versions = json.loads((path / "versions.json").read_text())
        if versions.get("format") not in FORMATS_READ:
            raise ValueError(f"{path} is a model in format {versions.get('format')}; this version reads "
                             f"formats {', '.join(map(str, FORMATS_READ))}: retrain it")
        _check_versions(versions)
        config = json.loads((path / "config.json").read_text())
        # a model saved before catalog.spec_keys / spec_values existed was trained on texts
        # without them
        config.setdefault("catalog", {}).setdefault("spec_keys", False)
        config["catalog"].setdefault("spec_values", 0)
        self = cls(Config.from_dict(config), RuleSet.from_dict(json.loads((path / "rules.json").read_text())))
        self.model_dir_ = path
        self.stack_ = StackedClassifier.load(path / "stack", allowed=model_registry.classes(),
                                             phase=events.stage)
        self.tokenizer_ = TitleTokenizer((path / "tokenizer.model").read_bytes())
        self.tabular_ = TabularEncoder.from_dict(json.loads((path / "tabular.json").read_text()))
        self.labels_ = json.loads((path / "labels.json").read_text())
        self.ancestors_ = (anc.load_ancestors(path / "ancestors", self.labels_, model_registry.classes(), events.stage)
                           if (path / "ancestors").is_dir() else [])
        hier = path / "hierarchy.json"
        self.hier_ = HierarchicalRouter.from_dict(json.loads(hier.read_text())) if hier.exists() else None
        self.versions_ = versions
        return self


class StageError(Exception):
    """A predict stage failed: ``stage`` (featurize / predict / route) and the original ``error``."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage} failed: {type(error).__name__}: {error}")
        self.stage, self.error = stage, error


@contextlib.contextmanager
def _stage(name: str):
    try:
        yield
    except StageError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the stage, reported with its class
        raise StageError(name, e) from e


def _num_threads() -> int:
    """LightGBM threads: CATALOG_CLASSIFIER_THREADS, else every core."""
    return int(os.environ.get("CATALOG_CLASSIFIER_THREADS", os.cpu_count() or 1))


def _load_rules(rules_dir: str) -> RuleSet:
    p = Path(rules_dir)
    return RuleSet.load(p) if p.exists() else RuleSet([])


def _rules_for(rules: RuleSet, labels: list[str]) -> tuple[RuleSet, dict[str, str]]:
    """Keep the rules that fit this model's label set; say why the others are off.

    One rules folder serves catalogs and label depths with different taxonomies, so a rule
    forcing a label this model does not have is disabled (and recorded), not fatal.
    """
    from .rules import RuleError

    kept, disabled = [], {}
    for rule in rules:
        try:
            RuleSet([rule]).validate_labels(labels)
            kept.append(rule)
        except RuleError as e:
            disabled[rule.id] = str(e).splitlines()[-1].strip()
    return RuleSet(kept), disabled


def _check_versions(saved: dict) -> None:
    now = library_versions()
    for lib in ("scikit-learn", "lightgbm", "sentencepiece", "torch"):
        if saved.get(lib) and saved[lib] != now.get(lib):
            log.warning("model was trained with %s %s, this environment has %s", lib, saved[lib], now.get(lib))


def _printer():
    from tqdm.auto import tqdm

    return lambda msg: tqdm.write(f"[train] {msg}")
