# Two commands matter: `make demo` (run every stage on the bundled sample) and `make test`.
# Both create .venv and install the pinned dependencies on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# The nightly pipeline's definition compiles in its own small venv (kfp; no TF/Beam): docs/GCP.md.
ORCH_VENV ?= .venv-orchestrate
ORCH_STAMP := $(ORCH_VENV)/.installed
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: demo test bench clean venv orchestrate-venv nightly

$(STAMP): requirements.txt requirements-dev.txt constraints.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements-dev.txt -c constraints.txt
	# the project itself, editable: `ga-wals` and the packages work from any folder
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.run --overwrite

$(ORCH_STAMP): requirements-orchestrate.txt constraints-orchestrate.txt
	test -x $(ORCH_VENV)/bin/python || $(PYTHON) -m venv $(ORCH_VENV)
	$(ORCH_VENV)/bin/pip install --disable-pip-version-check -q -r requirements-orchestrate.txt \
		-c constraints-orchestrate.txt
	touch $(ORCH_STAMP)

orchestrate-venv: $(ORCH_STAMP)

test: $(STAMP) $(ORCH_STAMP)
	GA_WALS_ORCHESTRATE_PYTHON=$(ORCH_VENV)/bin/python $(BIN)/python -m pytest -q

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PIP_INSTALL) -r requirements-bench.txt -c constraints.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.startup
	$(BIN)/python -m benchmarks.preprocess
	$(BIN)/python -m benchmarks.trainer_speed --json bench_out/trainer_speed.json
	$(BIN)/python -m benchmarks.exports
	$(BIN)/python -m benchmarks.wals_vs_implicit
	$(BIN)/python -m benchmarks.similar_items --json bench_out/similar_items.json
	$(BIN)/python -m benchmarks.batch_predict
	$(BIN)/python -m benchmarks.tuning --json bench_out/tuning.json
	$(BIN)/python -m benchmarks.fold_in_warm_start --json bench_out/fold_in_warm_start.json

clean:
	rm -rf output bench_out .pytest_cache

# Dataflow Flex Template (docs/GCP.md): builds the image with Cloud Build and writes the template
# spec to GCS. make template PROJECT=my-project REGION=europe-west1 BUCKET=my-bucket [TAG=v1]
# (gcloud builds submit skips what .gitignore lists, e.g. .venv and output/.)
REPO ?= ga-wals
TAG ?= latest
IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPO)/ga-wals:$(TAG)
TEMPLATE_PATH ?= gs://$(BUCKET)/templates/ga-wals.json

.PHONY: template
template: $(STAMP)
	@test -n "$(PROJECT)" -a -n "$(REGION)" -a -n "$(BUCKET)" || \
		{ echo "usage: make template PROJECT=... REGION=... BUCKET=... [REPO=ga-wals TAG=latest]"; exit 2; }
	$(BIN)/python -m pipeline.cloud.flex_template --check template/metadata.json
	gcloud builds submit --project=$(PROJECT) --region=$(REGION) --tag=$(IMAGE) .
	gcloud dataflow flex-template build $(TEMPLATE_PATH) --project=$(PROJECT) \
		--image=$(IMAGE) --sdk-language=PYTHON --metadata-file=template/metadata.json
	@echo "template: $(TEMPLATE_PATH)  image: $(IMAGE)"

# The nightly chain (docs/GCP.md): compile the Vertex AI pipeline spec.
nightly: $(ORCH_STAMP)
	$(ORCH_VENV)/bin/python schedule/nightly_pipeline.py compile --output ga_wals_nightly.yaml
