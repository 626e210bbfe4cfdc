"""``python -m catalog_classifier ...``: the same typer app as the ``catalog-classifier`` command."""
from .cli import main

main()
