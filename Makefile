# Two commands matter: `make demo` (run every stage on the bundled sample) and `make test`.
# Both create .venv and install the pinned dependencies on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: demo test bench clean venv

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.run --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PIP_INSTALL) -r requirements-bench.txt -c constraints.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.preprocess
	$(BIN)/python -m benchmarks.wals_vs_implicit
	$(BIN)/python -m benchmarks.batch_predict

clean:
	rm -rf output bench_out .pytest_cache
