# The README's two commands: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install build test demo bench clean

install:
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .

build:
	$(PYTHON) setup.py build_ext --inplace

# the test-only CUDA emulation library too (setup.py), so the CUDA kernels run in the tests
test: export DETECTION_CUDA_EMULATION ?= 1
test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: install
	$(PYTHON) tools/demo.py

bench: install
	$(PYTHON) benchmarks/run.py

clean:
	rm -rf build detection/_C*.so *.egg-info
