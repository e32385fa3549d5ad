# One venv per dependency specification, cached outside the clone (nnU-Net pulls a multi-GB torch).
PYTHON ?= python3
CACHE_DIR ?= $(HOME)/.cache/nnunet-multimodal
SPEC_HASH := $(shell cat requirements.txt requirements-test.txt | sha256sum | cut -c1-16)
VENV ?= $(CACHE_DIR)/venv-$(SPEC_HASH)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo clean-venv

# The venv's path holds the hash of the dependency specification, so the stamp needs no prerequisites
# (a fresh clone's file times would otherwise force a rebuild).
$(STAMP):
	@mkdir -p $(CACHE_DIR)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)
	@echo "venv: $(VENV)"

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/nnunet-mm demo $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
