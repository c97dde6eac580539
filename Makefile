# ScanLens: `make demo` runs the main job on the bundled data, `make test` runs the tests.
# Both create .venv and install the project (CPU torch pinned in constraints.txt) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# Folds of the cross-validation (fold_models has one partition per fold): 5 by default; the demo and
# its UI use 3 (the demo's minutes on a laptop CPU; docs/recipe.md, "The demo profile").
export SCANLENS_CV_FOLDS ?= 5
demo ui: export SCANLENS_CV_FOLDS := $(if $(filter command line environment,$(origin SCANLENS_CV_FOLDS)),$(SCANLENS_CV_FOLDS),3)
FOLD_RANGE = {"dagster/asset_partition_range_start": "fold_0", "dagster/asset_partition_range_end": "fold_$(shell expr $(SCANLENS_CV_FOLDS) - 1)"}
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo ui lint test bench fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# `dagster job execute` starts a partitioned job with an empty run config, so the demo profile's run
# config (pipeline/settings/profiles.py) is written to a file and passed with -c. The single-model job
# runs for the 3D partition (the I3D-inflated ResNet-50); the 2D ResNet-50s are the fold models of
# train_and_evaluate, which ingests the demo studies itself. --no-baseline-gate: see assets/definitions.py.
demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m assets.definitions scanlens_demo demo > $(DAGSTER_HOME)/scanlens_demo.demo.json
	$(BIN)/python -m assets.definitions train_and_evaluate demo --no-baseline-gate > $(DAGSTER_HOME)/train_and_evaluate.demo.json
	$(BIN)/dagster job execute -m assets.definitions -j scanlens_demo --tags '{"dagster/partition": "3d"}' \
	  -c $(DAGSTER_HOME)/scanlens_demo.demo.json
	$(BIN)/dagster job execute -m assets.definitions -j train_and_evaluate --tags '$(FOLD_RANGE)' \
	  -c $(DAGSTER_HOME)/train_and_evaluate.demo.json
	$(BIN)/scanlens import-medmnist data/demo/breastmnist.npz --out demo_work/inbox --inbox --limit 2 --seed 99
	$(BIN)/scanlens score demo_work/inbox --workdir demo_work/workdir --out demo_work/outbox
	$(BIN)/scanlens status --workdir demo_work/workdir
	@echo "Review-board PDF: $$($(BIN)/scanlens report --workdir demo_work/workdir 2>/dev/null)"
	@echo "Dagster runs and materialisations: $(DAGSTER_HOME) (open them with: make ui)"

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

# Debian packages the tests use: poppler-utils renders the report's pages (pdftoppm, pdftotext);
# chromium and chromium-driver drive the Dagster UI in tests/e2e/test_ui_browser.py; orthanc and
# orthanc-dicomweb are the PACS the network tests start on loopback ports (tests/orthanc.py; the
# system service is never used). Each is "command or file:package"; only the missing ones are
# installed (one apt-get update), and only as root.
SYSTEM_DEPS := pdftoppm:poppler-utils chromium:chromium chromedriver:chromium-driver Orthanc:orthanc \
  /usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb
system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do \
	  command -v "$${dep%%:*}" >/dev/null 2>&1 || test -e "$${dep%%:*}" || missing="$$missing $${dep#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "note:$$missing missing and not installable here (needs root and apt-get); their tests skip"; fi; \
	fi

# Lint (ruff: rules and formatting) and type-check (mypy) the package before the tests.
lint: $(STAMP)
	$(BIN)/ruff check pipeline assets
	$(BIN)/ruff format --check pipeline assets
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/saliency.py
	$(BIN)/python benchmarks/scoring.py

# Fuzzing campaign: N mutated DICOM/NIfTI files (seeded by SEED) through `scanlens ingest`, checked for
# files lost, crashes, memory and time; writes fuzz_work/report.md (and report.json). `make fuzz N=2000`.
N ?= 20000
SEED ?= 1
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.campaign --n $(N) --seed $(SEED) --out fuzz_work --report fuzz_work/report.md

clean:
	rm -rf demo_work $(DAGSTER_HOME)
