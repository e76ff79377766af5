# The README's two commands: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

# `install` runs again only when what the build depends on changed: the requirements, setup.py,
# pyproject.toml, csrc/, the interpreter (one stamp per environment) or a build setting. Even
# then ninja recompiles only the changed sources (setup.py keeps the objects under build/).
BUILD_KEY := $(shell { $(PYTHON) -c 'import sys; print(sys.prefix)'; \
	echo "$$FORCE_CUDA $$DETECTION_CUDA_EMULATION $$TORCH_CUDA_ARCH_LIST"; } | sha1sum | cut -c1-12)
STAMP := build/.installed-$(BUILD_KEY)
BUILD_INPUTS := requirements.txt setup.py pyproject.toml $(shell find csrc -type f)

.PHONY: install build test demo bench clean

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
