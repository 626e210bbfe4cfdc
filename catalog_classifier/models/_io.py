"""Small helpers shared by base models: column alignment and sklearn persistence."""
from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import sklearn


def align_proba(proba: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((proba.shape[0], n_classes), dtype=np.float32)
    out[:, classes] = proba
    return out


def save_sklearn(obj, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    joblib.dump(obj, path / "model.joblib")
    (path / "meta.json").write_text(json.dumps({"sklearn": sklearn.__version__}))


def load_sklearn(path: Path):
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("sklearn") != sklearn.__version__:
        raise RuntimeError(
            f"{path} was saved with scikit-learn {meta.get('sklearn')}, this is {sklearn.__version__}; "
            "install the version recorded in the model's versions.json")
    return joblib.load(path / "model.joblib")
