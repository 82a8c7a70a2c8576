import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlaif.judging import configs as judge_configs
from rlaif.judging.base import Judge, JudgeRequest, Verdict
from rlaif.models.loading import load_tokenizer
from tests.loopback import Loopback

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL's experimental trainers are the peers some tests compare with

HH = Path(__file__).resolve().parent.parent / "examples" / "hh-harmless.jsonl.gz"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class ScriptedJudge(Judge):
    """A test double with a known answer: prefers the response containing 'GOOD', and adds
    a fixed bias towards whatever is shown first."""

    @dataclass
    class Options:
        bias: float = 0.0

    calls: ClassVar[list[str]] = []  # every prompt any instance was asked, in order

    def judge(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        for i, r in enumerate(requests):
            ScriptedJudge.calls.append(r.prompt)
            first = r.prompt.split("Response 1:")[1].split("Response 2:")[0]
            p = 0.8 if "GOOD" in first else 0.2
            p = min(0.99, p + self.options.bias)
            if "UNREADABLE" in r.prompt:
                on_result(i, Verdict(p_first=None, text="I cannot decide", soft=False, error="no verdict in the reply"))
            else:
                on_result(i, Verdict(p_first=p, prompt_tokens=10))


@pytest.fixture
def scripted_judge(tmp_path, monkeypatch):
    """Path of a judge config for `ScriptedJudge` with the given first-position bias."""
    monkeypatch.setitem(judge_configs.BACKENDS, "scripted", "tests.conftest:ScriptedJudge")
    ScriptedJudge.calls = []

    def make(bias: float = 0.0) -> str:
        path = tmp_path / f"scripted-{bias}.toml"
        path.write_text(f'backend = "scripted"\nmodel = "none"\n[options]\nbias = {bias}\n')
        return str(path)

    return make


def tiny_config(vocab: int, tok, tie_word_embeddings: bool = False, **extra) -> LlamaConfig:
    return LlamaConfig(**{"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "num_key_value_heads": 1, "max_position_embeddings": 2048, "pad_token_id": tok.pad_token_id,
                          "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id,
                          "tie_word_embeddings": tie_word_embeddings, **extra})


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A 2-layer Llama with the embedded model's tokenizer, saved like any model directory."""
    path = tmp_path_factory.mktemp("tiny")
    tok = load_tokenizer(None)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config(len(tok), tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII (98 tokens): small action spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 127)]
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


SECRET = "sk-loopback-secret-0123456789"


@pytest.fixture
def judge_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RLAIF_TEST_KEY", SECRET)

    def make(srv: Loopback, backend: str = "openai", **options) -> str:
        base = {"base_url": srv.url + ("/v1" if backend == "openai" else ""), "api_key_env": "RLAIF_TEST_KEY",
                "timeout": 0.5, "retry_initial_wait": 0.01, "retry_max_wait": 0.2, "concurrency": 4, **options}
        lines = [f'backend = "{backend}"', 'model = "loopback-judge"', "[options]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in base.items()]
        path = tmp_path / f"{backend}-{len(list(tmp_path.glob('*.toml')))}.toml"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    return make
