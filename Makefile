# The README's two commands: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

# `make test` also builds the test-only CUDA emulation library (setup.py), so that the CUDA
# kernels run in the tests; DETECTION_CUDA_EMULATION=0 in the environment turns it off.
ifneq ($(filter test,$(MAKECMDGOALS)),)
DETECTION_CUDA_EMULATION ?= 1
export DETECTION_CUDA_EMULATION
endif

# `install` runs again only when what the build depends on changed: the requirements, setup.py,
# pyproject.toml, csrc/, the interpreter (one stamp per environment) or a build setting. Even
# then ninja recompiles only the changed sources (setup.py keeps the objects under build/).
BUILD_KEY := $(shell { $(PYTHON) -c 'import sys; print(sys.prefix)'; \
	echo "$(FORCE_CUDA) $(DETECTION_CUDA_EMULATION) $(TORCH_CUDA_ARCH_LIST)"; } | sha1sum | cut -c1-12)
STAMP := build/.installed-$(BUILD_KEY)
BUILD_INPUTS := requirements.txt setup.py pyproject.toml $(shell find csrc -type f)

.PHONY: install build test demo bench clean lint format

install: $(STAMP)

$(STAMP): $(BUILD_INPUTS)
	$(PIP) --version
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@mkdir -p build && touch $@

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
# format (clang-format, .clang-format; also benchmarks/*.c). `make format` applies the two
# formatters.
# Pinned: another formatter version formats differently and would fail the check.
LINT_TOOLS := import-linter==2.17 ruff==0.17.6 clang-format==23.1.5
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh') $(wildcard benchmarks/*.c)

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
