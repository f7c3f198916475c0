# Two set-up commands: `make demo` and `make test`, both from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results/demo
JOBS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: demo test bench clean

$(BIN)/actconv: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test,parquet,ray,tensorboard,mlflow]'
	touch $@

demo: $(BIN)/actconv
	$(BIN)/actconv run --preset demo --out $(OUT)
	$(BIN)/actconv report $(OUT)

test: $(BIN)/actconv
	$(BIN)/python -m pytest -q

# The reference loop is ../shared/bench/seed_style.py unless ACTCONV_REFERENCE names another.
bench: $(BIN)/actconv
	$(BIN)/python benchmarks/bench.py --jobs $(JOBS) $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) results .pytest_cache
