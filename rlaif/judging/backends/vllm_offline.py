"""A judge and generator on vLLM's offline engine, in this process, on a GPU (extra `[vllm]`).

As the local transformers judge: the rubric is the user turn, the assistant turn is pre-filled
with the verdict prefix (after a generated rationale with `--cot`), and the soft label comes
from the next token's log-probabilities of the labels. vLLM returns the top `logprobs` of them;
a label outside the top ones is given the smallest listed probability (an upper bound on its
mass, as for API judges). Every request of a call goes to the engine at once; its prefix
caching computes the rubric instructions and a pair's shared beginning once for both orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rlaif.judging.backends.prefilled import PrefilledJudge, label_token_ids, rationale
from rlaif.judging.base import JudgeConfig, JudgeConfigError, SamplingJudge
from rlaif.models.loading import chat_prompt, load_tokenizer, resolve_model


@dataclass
class VLLMOptions:
    max_new_tokens: int = 256  # rationale length, with --cot
    temperature: float = 0.0  # rationale sampling; 0 is greedy
    logprobs: int = 20  # top log-probabilities returned at the verdict token
    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9


class VLLMJudge(PrefilledJudge, SamplingJudge):
    Options = VLLMOptions
    NOT_IN_KEY = frozenset({"tensor_parallel_size", "gpu_memory_utilization"})

    def __init__(self, config: JudgeConfig):
        super().__init__(config)
        try:
            import vllm  # here: the extra is optional, and needs a GPU
        except ImportError:
            raise JudgeConfigError(f"{config.source or config.name}: backend 'vllm' needs vLLM and a GPU: "
                                   "pip install -e '.[vllm]'") from None
        self._vllm = vllm
        path = resolve_model(config.model)
        self.tokenizer = load_tokenizer(path)
        o = self.options
        self.llm = vllm.LLM(model=path, dtype=o.dtype, max_model_len=o.max_model_len, tensor_parallel_size=o.tensor_parallel_size,
                            gpu_memory_utilization=o.gpu_memory_utilization, enable_prefix_caching=True, max_logprobs=max(20, o.logprobs))

    @classmethod
    def completion_budget(cls, options: VLLMOptions, cot: bool) -> int:
        return options.max_new_tokens if cot else 0

    def _rationales(self, chats: list[str], verdict_prefix: str) -> tuple[list[str], list[int]]:
        params = self._vllm.SamplingParams(max_tokens=self.options.max_new_tokens, temperature=self.options.temperature)
        texts, counts = [], []
        for out in self.llm.generate(chats, params, use_tqdm=False):
            texts.append(rationale(out.outputs[0].text, verdict_prefix))
            counts.append(len(out.outputs[0].token_ids))
        return texts, counts

    def label_probs(self, texts: list[str], labels: tuple[str, ...]) -> tuple[list[list[float]], list[int]]:
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.options.logprobs)
        ids = [label_token_ids(self.tokenizer, label) for label in labels]
        found, lengths = [], []
        for out in self.llm.generate(texts, params, use_tqdm=False):
            top = {token: lp.logprob for token, lp in out.outputs[0].logprobs[0].items()}
            floor = math.exp(min(top.values()))
            found.append([sum(math.exp(top[t]) for t in label_ids if t in top) or floor for label_ids in ids])
            lengths.append(len(out.prompt_token_ids))
        return found, lengths

    def sample(self, conversations: list[list[dict[str, str]]], n: int, max_tokens: int, temperature: float, seeds: list[int],
               on_result) -> None:
        """`n` replies to each conversation (a generator's call: see `generation`)."""
        chats = [chat_prompt(self.tokenizer, c) for c in conversations]
        params = [self._vllm.SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed) for seed in seeds]
        for index, out in enumerate(self.llm.generate(chats, params, use_tqdm=False)):
            on_result(index, [o.text.strip() for o in out.outputs], None)

    def close(self) -> None:
        del self.llm
