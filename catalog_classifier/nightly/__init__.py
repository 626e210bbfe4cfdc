"""After training: the nightly batch job (``batch/``), the review queue with its exports and label files
(``review/``), and the model lifecycle with retraining (``lifecycle/``)."""
