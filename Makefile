# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# `make demo` installs what running img2img needs; `make test` adds the test tools (the dev extra).
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the CPU-only torch wheels first
# (PyPI's Linux wheels carry CUDA: several GB a CPU-only machine never uses; see README "Install").
PYTHON ?= python3
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(DEV)

## Upscale the bundled sample photo with the bundled default model into demo_out/ (runtime dependencies only).
demo: $(RUNTIME)
	$(BIN)/img2img upscale assets/sample.png demo_out/ --overwrite
	@echo "wrote demo_out/sample.png: assets/sample.png upscaled x4 by the bundled img2img-sr-x4 (weights/img2img-sr-x4.md)"

## The whole test suite, including the import-layer contracts.
test: $(DEV)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(DEV)
	$(BIN)/ruff check img2img tests benchmarks

clean:
	rm -rf $(VENV) demo_out .pytest_cache
