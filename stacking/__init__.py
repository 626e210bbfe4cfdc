"""Generic out-of-fold stacking: base estimators -> LightGBM meta -> calibration ->
per-class thresholds. Imports nothing from catalog_classifier."""
from .folds import make_folds
from .meta_features import Passthrough
from .stack import StackedClassifier, StackParams
from .thresholds import route, select_thresholds

__all__ = ["make_folds", "Passthrough", "StackedClassifier", "StackParams", "route", "select_thresholds"]
