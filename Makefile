# The two README commands: `make demo` and `make test` (`make test-all` adds the slow tier). All set up .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medsft-installed
DEMO := output/demo
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test test-slow test-all docs readme notebooks

install: $(STAMP)
# torch==2.13.0 first: it is the CPU build (a bare `torch` requirement would pull a multi-GB CUDA build).
$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,demo,bench,serve]"
	touch $@

# data -> full SFT -> LoRA SFT -> predict, on the embedded tiny Qwen3 and the built-in sample rows
demo: $(STAMP)
	bash .ci/demo.sh $(DEMO)

# the fast tier (README command 2); the slow tier (real-size and multi-process runs, long notebook cells); both (CI)
test: $(STAMP)
	bash .ci/test.sh

test-slow: $(STAMP)
	bash .ci/test.sh slow

test-all: test test-slow

# JupyterLab on the notebooks (installed into .venv on first use: it is not a dependency of medsft)
notebooks: $(STAMP)
	test -x $(BIN)/jupyter-lab || $(BIN)/python -m pip install -q jupyterlab
	$(BIN)/jupyter lab nbs

docs: $(STAMP)
	bash .ci/docs.sh

readme: $(STAMP)
	$(BIN)/python .ci/readme.py
