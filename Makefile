# The two commands:  `make run` (the main job on bundled data) and `make test`.
# Both create .venv and install everything on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch pinned: the CPU build on this platform (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install --quiet "torch==2.13.0" -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/elbokit tour --out build/tour --force

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet "torch==2.13.0" -e ".[bench]"
	$(BIN)/python bench/gmm.py

clean:
	rm -rf $(VENV) build src/*.egg-info
