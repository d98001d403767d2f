# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## Upscale the bundled sample photo with the bundled default model into demo_out/.
demo: $(STAMP)
	$(BIN)/img2img upscale assets/sample.png demo_out/ --overwrite
	@echo "wrote demo_out/sample.png: assets/sample.png upscaled x4 by the bundled img2img-sr-x4 (weights/img2img-sr-x4.md)"

## The whole test suite, including the import-layer contracts.
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check img2img tests benchmarks

clean:
	rm -rf $(VENV) demo_out .pytest_cache
