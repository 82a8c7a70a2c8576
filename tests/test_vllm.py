"""The `vllm` backend (extra `[vllm]`): on a GPU, against the transformers judge on the same
model; on this CPU machine, only what needs no engine."""

import importlib.util

import pytest
import torch

from rlaif.judging.base import JudgeConfigError
from rlaif.labeling.run import LabelConfig, label
from tests.conftest import HH, write_jsonl

needs_engine = pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                                  reason="vLLM's engine needs the [vllm] extra and a GPU")


def vllm_config(tmp_path) -> str:
    path = tmp_path / "vllm.toml"
    path.write_text('backend = "vllm"\nmodel = "embedded"\n[options]\ndtype = "float32"\ngpu_memory_utilization = 0.3\n')
    return str(path)


def test_dry_run_counts_the_calls_without_an_engine(tmp_path):
    estimate = label(LabelConfig(f"{HH}?rows=0:5", str(tmp_path / "out"), judge=vllm_config(tmp_path),
                                 dry_run=True, progress=False)).estimate
    assert estimate["calls"] == 10 and estimate["pairs"] == 5


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_without_vllm_the_error_says_what_to_install(tmp_path):
    with pytest.raises(JudgeConfigError, match=r"pip install -e '\.\[vllm\]'"):
        label(LabelConfig(f"{HH}?rows=0:2", str(tmp_path / "out"), judge=vllm_config(tmp_path), progress=False))


@needs_engine
def test_vllm_judge_agrees_with_the_transformers_judge_on_the_same_model(tmp_path):
    data = f"{HH}?rows=0:8"
    local = label(LabelConfig(data, str(tmp_path / "local"), judge="embedded", progress=False)).rows
    engine = label(LabelConfig(data, str(tmp_path / "vllm"), judge=vllm_config(tmp_path), progress=False)).rows
    assert [r["id"] for r in engine] == [r["id"] for r in local]
    for a, b in zip(engine, local):
        assert [o["p_first"] for o in a["orders"]] == pytest.approx([o["p_first"] for o in b["orders"]], abs=2e-2)


@needs_engine
def test_vllm_generates_candidates_for_prompt_only_rows(tmp_path):
    path = str(write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"Name a fruit, number {i}."} for i in range(4)]))
    config = vllm_config(tmp_path)
    result = label(LabelConfig(path, str(tmp_path / "out"), judge=config, generator=config, max_new_tokens=16, progress=False))
    assert result.manifest["counts"]["examples"] == 4 and result.failures == []
    assert all(r["chosen"] != r["rejected"] for r in result.rows)
