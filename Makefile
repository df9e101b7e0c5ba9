# Two commands do all the set-up on a fresh machine:
#   make test   create/reuse .venv, install torch + deps + mama (C++ extension), run the tests
#   make demo   the same install, then the whole pipeline on the embedded synthetic dataset
# Running either twice reinstalls nothing: the stamps below only go stale when their inputs change.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
BUILT  := $(VENV)/.mama-built
CSRC   := $(shell find csrc -name '*.cpp' -o -name '*.h')

.PHONY: install test test-triton demo bench clean

$(DEPS):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: pip takes these two from this machine's disk. The extension is built
	# against it, so the build tools come before mama too.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 "setuptools>=70" wheel ninja
	touch $@

# mama in place (editable) with its dependencies and the test tools, all from pyproject.toml's one
# list; --no-build-isolation: the extension must build against the torch installed above.
$(BUILT): $(DEPS) setup.py pyproject.toml $(CSRC)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation -e ".[dev]"
	touch $@

install: $(BUILT)

test: $(BUILT)
	$(PY) -m pytest tests -q

# The Triton kernels alone (on CPU they run under TRITON_INTERPRET=1, set by tests/conftest.py).
test-triton: $(BUILT)
	$(PY) -m pytest tests -q -m triton

demo: $(BUILT)
	$(VENV)/bin/mama demo

# Every benchmark (ops and end to end), ours vs the reference in the same run; JSON in benchmarks/results/.
bench: $(BUILT)
	$(PY) -m pytest benchmarks --benchmark-only -q --benchmark-json benchmarks/results/latest.json

clean:
	rm -rf build *.egg-info mama/_C*.so
