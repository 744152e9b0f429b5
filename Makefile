# Tessera: `make run` sets everything up and runs the main job; `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup run test lint bench fuzz clean

setup: $(VENV)/.installed

# torch is installed first and alone: `torch==2.13.0` resolves to the CPU build where one is
# provided locally, and everything after it then reuses that torch instead of pulling a CUDA one.
$(VENV)/.installed: pyproject.toml requirements/ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/ci.txt -e ".[dev]"
	touch $@

run: setup
	$(BIN)/python examples/run_gemma.py $(ARGS)

# mypy through test/typecheck.py, which names each file by its `tessera.*` module (pyproject's
# package-dir mapping, which mypy cannot see); flags and settings come from [tool.mypy].
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python test/typecheck.py

test: setup lint
	$(BIN)/lit -sv test/lit
	$(BIN)/python -m pytest -q test/python

bench: setup
	$(BIN)/python bench/cpu.py $(ARGS)

# The seeded mutation fuzzer of tessera-opt over the lit inputs, longer than the test suite's
# 300 cases (seed 1): `make fuzz FUZZ_SEED=7 FUZZ_CASES=20000`. Failing inputs go to build/fuzz.
FUZZ_SEED ?= 1
FUZZ_CASES ?= 5000
fuzz: setup
	$(BIN)/python test/fuzz/fuzz_opt.py --seed $(FUZZ_SEED) --cases $(FUZZ_CASES) --keep build/fuzz $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info test/lit/**/Output .pytest_cache
