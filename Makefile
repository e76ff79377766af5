# The README's two commands: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install build test demo bench clean lint format

install:
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .

build:
	$(PYTHON) setup.py build_ext --inplace

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: install
	$(PYTHON) tools/demo.py

bench: install
	$(PYTHON) benchmarks/run.py

clean:
	rm -rf build detection/_C*.so *.egg-info

# Layering (import-linter, .importlinter), Python lint and format (ruff, ruff.toml) and C++/CUDA
# format (clang-format, .clang-format). `make format` applies the two formatters.
LINT_TOOLS := import-linter ruff clang-format
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

lint:
	$(PIP) install -q $(LINT_TOOLS)
	lint-imports
	ruff check .
	ruff format --check .
	clang-format --dry-run --Werror $(CSRC)

format:
	$(PIP) install -q $(LINT_TOOLS)
	ruff check --fix --exit-zero .
	ruff format .
	clang-format -i $(CSRC)
