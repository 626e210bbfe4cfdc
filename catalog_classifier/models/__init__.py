"""Base models, each an estimator with fit / predict_proba / save / load."""
from . import brand_prior, char_cnn, image_head, linear_text  # noqa: F401  (register)
from .registry import available, create

__all__ = ["available", "create"]
