# catalog-classifier: `make run` (demo job) and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
DEMO   := data/flipkart1050/flipkart_com-ecommerce_sample_1050.csv
DEMO_CFG := data/flipkart1050/catalog.yaml
NIGHT  ?= out/demo-night
SHARED ?= ../shared/datasets
# tests and the benchmark read the shared catalogs from here (`make test SHARED=/path` for a clone elsewhere)
export CATALOG_CLASSIFIER_DATASETS := $(abspath $(SHARED))

.PHONY: install run test evaluate bench bench-quick clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## The optional Ray engine (nightly --engine ray): only the tests and the benchmark need it.
$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,ray]'
	touch $(RAY_STAMP)

install: $(STAMP)

## Train on the bundled Flipkart demo catalog, register the model in MLflow, categorize the catalog.
run: $(STAMP)
	$(BIN)/catalog-classifier train --catalog $(DEMO) --config $(DEMO_CFG) --out models/demo
	$(BIN)/catalog-classifier nightly --catalog $(DEMO) --config $(DEMO_CFG) --model models/demo --out $(NIGHT) --force
	@echo "model version: models/demo   night: $(NIGHT)   MLflow: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: $(RAY_STAMP)
	$(BIN)/python -m pytest -q --durations=12

## Re-create reports/evaluation.json (Flipkart 5-fold nested CV, BigBasket one-fit out-of-fold; hours on 2 cores).
evaluate: $(STAMP)
	$(BIN)/catalog-classifier evaluate --catalog $(DEMO) --config $(DEMO_CFG) --name flipkart1050 --level 1 --level 2 --level 3
	$(BIN)/catalog-classifier evaluate --catalog "$(SHARED)/bigbasket/BigBasket Products.csv" --config configs/bigbasket.yaml --name bigbasket --level 1 --level 2 --level 3 --protocol oof

## The benchmark lives outside the product (bench/, not installed): run from the repository root.
bench: $(RAY_STAMP)
	$(BIN)/python -m bench

bench-quick: $(RAY_STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf out models .cache mlruns mlflow.db
