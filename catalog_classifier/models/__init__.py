"""Base models, each a scikit-learn estimator (fit / predict_proba) with save / load."""
from . import brand_prior, char_cnn, image_head, linear_text  # noqa: F401  (register)
from .registry import available, check_params, classes, create

__all__ = ["available", "check_params", "classes", "create"]
