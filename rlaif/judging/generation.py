"""Sampling candidate responses for prompt-only rows: with a local transformers model (the
embedded one by default), on any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama,
the OpenAI API) named by a judge config, with its servers, concurrency and retries, or on
vLLM's offline engine (a `vllm` judge config)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError
from rlaif.inputs import Example, Prompt, as_messages
from rlaif.judging.base import JudgeConfig, JudgeConfigError, SamplingJudge
from rlaif.judging.configs import CONFIG_SUFFIXES, JURY, judge_class, load_judge, load_judge_config
from rlaif.models.loading import chat_prompt, is_embedded, load_causal_lm, load_tokenizer, model_fingerprint, resolve_model
from rlaif.storage.cache import AnswerCache, cache_key

# on_result(index, responses, error): the responses to prompts[index], or why there are none.
OnResult = Callable[[int, list[str] | None, str | None], None]

# The sampling temperature of every command that samples responses to label, revise or compare;
# the online trainers' rollouts sample at 1.0 instead (their ratios assume the policy's own distribution).
SAMPLING_TEMPERATURE = 0.8


class Generator(ABC):
    """Writes `n` sampled responses to each prompt."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What determines the samples besides the prompt and the sampling settings (cache keys)."""

    @abstractmethod
    def sample(self, prompts: list[Prompt], n: int, max_new_tokens: int, temperature: float, seeds: list[int], on_result: OnResult) -> None:
        """Sample every prompt, calling `on_result` as each prompt's responses are done."""

    def close(self) -> None:
        """Release the model or connections."""


class LocalGenerator(Generator):
    """A causal LM on this machine (loaded on first use), prompts of similar length sampled
    together, each sample from its own seeded random stream (`rlaif.models.sampling`)."""

    def __init__(self, model: str | None = None, batch_rows: int = 16):
        self.model = model
        self.batch_rows = batch_rows
        self._loaded: tuple[Any, Any] | None = None

    def identity(self) -> dict[str, Any]:
        return {"model": model_fingerprint(self.model), "sampler": "per-sample streams"}

    def sample(self, prompts, n, max_new_tokens, temperature, seeds, on_result) -> None:
        from rlaif.models.sampling import sample_prompts  # here, not at the top: `rlaif` starts without loading torch

        if self._loaded is None:
            self._loaded = load_tokenizer(resolve_model(self.model), padding_side="left"), load_causal_lm(self.model)
        tokenizer, lm = self._loaded
        ids = [tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]

        def done(index: int, responses: list[list[int]]) -> None:
            on_result(index, [tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses], None)

        sample_prompts(lm, tokenizer, ids, n, max_new_tokens, temperature, seeds, done, self.batch_rows)

    def close(self) -> None:
        self._loaded = None


class JudgeGenerator(Generator):
    """The `sample` of a judge backend that also generates (a `SamplingJudge`): chat completions with `n` samples on
    the server(s) of an `openai` config, whose connection settings apply (servers, key,
    concurrency per server, rate limits, retries) and judging ones do not (temperature,
    max_tokens, top_logprobs); or vLLM's offline engine."""

    def __init__(self, config: JudgeConfig):
        self.config = config
        self._judge: Any = None

    def identity(self) -> dict[str, Any]:
        return judge_class(self.config).identity(self.config)

    def sample(self, prompts, n, max_new_tokens, temperature, seeds, on_result) -> None:
        if self._judge is None:
            self._judge = load_judge(self.config)
        self._judge.sample([as_messages(p, "user") for p in prompts], n, max_new_tokens, temperature, seeds, on_result)

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()
            self._judge = None


def load_generator(spec: str | None = None) -> Generator:
    """A generator from a judge config (a built-in name or a file; backend `local`, `openai` or
    `vllm`), else from a model name or directory for the local backend; the embedded model by default."""
    if spec is None or is_embedded(spec) or Path(spec).is_dir():
        return LocalGenerator(spec)
    try:
        config = load_judge_config(spec)
    except JudgeConfigError:
        if Path(spec).suffix in CONFIG_SUFFIXES:
            raise
        return LocalGenerator(spec)  # a model name on the hub
    if config.backend == "local":
        return LocalGenerator(config.model)
    if config.backend != JURY and issubclass(judge_class(config), SamplingJudge):
        return JudgeGenerator(config)
    raise ConfigError(f"{config.source}: backend {config.backend!r} does not write responses: a generator is a model, "
                      "a 'local' config, or a config whose backend samples (its judge is a SamplingJudge: 'openai', "
                      "any OpenAI-compatible server, or 'vllm')")


def prompt_seed(seed: int, prompt: Prompt) -> int:
    """A prompt's sampling seed. Seeded by prompt, not by model: a resumed run samples the same,
    and different models draw on the same random numbers (their comparison is paired)."""
    return int(cache_key(seed, prompt)[:15], 16)


def generate_responses(
    examples: list[Example],
    generator: Generator | str | None = None,
    num_responses: int = 2,
    max_new_tokens: int = 256,
    temperature: float = SAMPLING_TEMPERATURE,
    seed: int = 0,
    cache: AnswerCache | None = None,
    on_done: Callable[[], None] | None = None,
) -> dict[str, str]:
    """Fill `example.responses` with `num_responses` samples each, reusing cached samples.
    Returns, by example id, why an example got none (its calls gave up; asked again next run)."""
    own = not isinstance(generator, Generator)
    gen = load_generator(generator) if own else generator
    options = {**gen.identity(), "k": num_responses, "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    todo, keys = [], []
    for ex in examples:
        key = cache_key("generate", options, ex.prompt)
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            ex.responses = cached
            if on_done:
                on_done()
        else:
            todo.append(ex)
            keys.append(key)
    errors: dict[str, str] = {}

    def on_result(index: int, responses: list[str] | None, error: str | None) -> None:
        ex = todo[index]
        if responses is None:
            errors[ex.id] = error or "no responses"
        else:
            ex.responses = responses
            if cache is not None:
                cache.put(keys[index], responses)
        if on_done:
            on_done()

    try:
        if todo:
            gen.sample([ex.prompt for ex in todo], num_responses, max_new_tokens, temperature,
                       [prompt_seed(seed, ex.prompt) for ex in todo], on_result)
    finally:
        if own:
            gen.close()
    return errors
