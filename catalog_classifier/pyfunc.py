"""MLflow pyfunc wrapper: ``mlflow.pyfunc.load_model(uri).predict(items_df)``."""
from __future__ import annotations

import mlflow.pyfunc


class CatalogClassifierPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from catalog_classifier.classifier import CatalogClassifier

        self.clf = CatalogClassifier.load(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        image_root = (params or {}).get("image_root")
        return self.clf.predict(model_input, image_root=image_root)
