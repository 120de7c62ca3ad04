# EMOCA for Blender. The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV42 := .venv-bpy42
PY := $(VENV)/bin/python
PY42 := $(VENV42)/bin/python
PIP_FLAGS := -q --disable-pip-version-check -c requirements/constraints.txt
EXT_DIR := build/extension
DIST := dist
# Blender's own extension build/validate tool, shipped inside the bpy wheel (no Blender binary needed).
BLENDER_EXT = $(shell find $(dir $(PY))../lib -path '*/bl_pkg/cli/blender_ext.py' 2>/dev/null | sort | tail -1)

# Coverage of the in-process tests (code run in child processes, backend servers and Blender, is not counted).
COV_FLAGS := --cov --cov-report=term:skip-covered

.PHONY: demo test test-main test-fast test-legacy check format lint types env env-legacy lock extension bench clean

## Set-up: the backend + Blender 5.0 environment (torch, bpy, PyAV, mediapipe, ...), pinned.
env: $(VENV)/.installed
$(VENV)/.installed: requirements/*.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements/backend.txt -r requirements/dev.txt
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -r requirements/nodeps.txt
	touch $@

## The Blender 4.2 LTS environment for the legacy animation API tests (bpy + numpy only).
env-legacy: $(VENV42)/.installed
$(VENV42)/.installed: requirements/bpy42.txt
	$(PYTHON) -m venv $(VENV42)
	$(PY42) -m pip install -q --disable-pip-version-check -r requirements/bpy42.txt
	touch $@

## Re-lock after changing requirements/*.txt: every installed version of both environments, pinned.
lock: env env-legacy
	{ grep '^#' requirements/constraints.txt; \
	  $(PY) -m pip freeze --all --exclude pip --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; \
	} > requirements/constraints.txt.new && mv requirements/constraints.txt.new requirements/constraints.txt
	{ grep '^#' requirements/bpy42.txt; $(PY42) -m pip freeze --exclude-editable; } > requirements/bpy42.txt.new \
	  && mv requirements/bpy42.txt.new requirements/bpy42.txt

## The main job on the built-in defaults.
demo: env
	$(PY) -m backend demo --output demo_output

## The whole gate (what CI runs): format, lint (incl. complexity), types, then the suite with coverage on
## Blender 5.0.1, then the add-on under Blender 4.2 LTS.
test: test-main test-legacy

test-main: check
	$(PY) -m pytest $(COV_FLAGS)

## The fast lane while working: no slow tests, no coverage, no legacy environment.
test-fast: env
	$(PY) -m pytest -m "not slow"

test-legacy: env-legacy
	$(PY42) -m pytest -m "blender and not torch" tests/blender tests/test_extension.py -p no:cacheprovider

## Every benchmark, one `name: value` per line.
bench: env
	$(PY) -m backend bench all

## Static checks, each over the whole tree (configuration in pyproject.toml).
check: format lint types

format: env
	$(PY) -m ruff format --check .

lint: env
	$(PY) -m ruff check .

types: env
	$(PY) -m mypy

## The installable extension zip, built and validated by Blender's own extension tool.
extension: $(if $(filter $(VENV)/bin/python,$(PY)),env)
	rm -rf $(EXT_DIR) && mkdir -p $(EXT_DIR) $(DIST)
	cp -r emoca_blender/. $(EXT_DIR)/
	cp -r backend $(EXT_DIR)/backend
	cp -r emoca_contract $(EXT_DIR)/emoca_contract
	cp -r requirements $(EXT_DIR)/requirements
	cp blender_manifest.toml LICENSE $(EXT_DIR)/
	find $(EXT_DIR) -name __pycache__ -prune -exec rm -rf {} +
	$(PY) $(BLENDER_EXT) build --source-dir $(EXT_DIR) --output-dir $(DIST)
	$(PY) $(BLENDER_EXT) validate $(DIST)/emoca_blender-*.zip

clean:
	rm -rf build $(DIST) demo_output .pytest_cache .ruff_cache .mypy_cache .coverage
