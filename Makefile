# Set-up and the two commands of the README. Every pip call is pinned to the local CPU torch build
# (.ci/constraints.txt), so no dependency can drag in a multi-GB CUDA torch.
PY  ?= python
PIP := $(PY) -m pip install -q -c .ci/constraints.txt
EXTRAS ?= dev,deepspeed

.PHONY: install main test lint
install:
	$(PIP) torch==2.13.0
	$(PIP) -e ".[$(EXTRAS)]"

main: install  ## SIFT vs baseline pretraining on the bundled corpus (CPU, ~10 min)
	sift-compare

test: install  ## the whole test suite (CPU; GPU tests run where CUDA exists)
	$(PY) -m pytest -q -rs

lint:
	ruff check .
