"""A judge on a reward model: any `AutoModelForSequenceClassification` directory with one score
(an `rlaif train --method rm` output, or a public reward model the machine has).

It reads no rubric. Each response is scored on its own, prompt and response as the model was
trained on them (the chat template, then the response and EOS), so there is no order to be
biased by: a pair costs one call per distinct response, and P(A ≻ B) = σ((r_A − r_B) / T)
with T the `temperature` option.

A sequence is read whole up to the model's position limit (`max_length` sets a shorter cut):
not at the length the model was trained at, since a score read from the whole conversation
agrees with human labels more often than one read from its end (docs/benchmarks.md). Only
where the limit forces a cut does a long prompt give up its beginning. Training cuts a pair's
prompt once for both responses; here each response is cut on its own, because its score is
cached by (prompt, response) and must not depend on the response it is compared with. The two
differ only for sequences longer than the model can read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlaif.errors import ConfigError
from rlaif.inputs import Prompt
from rlaif.judging.base import Judge, JudgeConfig, JudgeRequest, Verdict
from rlaif.models.loading import load_reward_model, load_tokenizer, model_fingerprint, position_limit, resolve_model


@dataclass
class RewardModelOptions:
    temperature: float = 1.0  # T in σ((r_A − r_B) / T): larger is less sure
    batch_size: int = 16
    # tokens per prompt + response (a long prompt gives up its beginning) [default: the model's position limit]
    max_length: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"key 'options.max_length': must be at least 1, got {self.max_length}")


def scoring_length(options: RewardModelOptions, model: str) -> int:
    """The tokens a prompt + response is cut to: the option, else the longest the model reads."""
    return options.max_length or position_limit(model)


@torch.no_grad()
def reward_scores(model, tokenizer, items: Sequence[tuple[Prompt, str]], max_length: int, batch_size: int,
                  on_batch: Callable[[list[int], list[float], list[int]], None] | None = None) -> list[float]:
    """The reward model's score of each (prompt, response), in batches of similar length;
    `on_batch(indices, scores, token counts)` hears each batch as it is done. Where the model
    allows it (`models.blocks`), a prompt's responses share a packed row, up to `batch_size`
    rows a batch, their common tokens computed once and the blocks on real tokens only; any
    other sequence classifier reads padded batches of up to `batch_size` sequences. Long
    sequences go fewer to a batch (`models.packing.length_batches`)."""
    from rlaif.models.blocks import hidden_at, runs_piecewise
    from rlaif.models.encoding import collate, encode
    from rlaif.models.packing import length_batches, packed_batches

    sequences = [encode(tokenizer, *item, max_length, f"item:{i}", True) for i, item in enumerate(items)]
    scores = [0.0] * len(items)
    if runs_piecewise(model):
        batches: Iterable[tuple[list[int], Any]] = packed_batches(sequences, batch_size, tokenizer.pad_token_id, str(model.device))
        score = lambda batch: model.score(hidden_at(model, batch.packed, batch.last_index))[:, 0]
    else:
        chunks = length_batches([len(seq["input_ids"]) for seq in sequences], batch_size)
        batches = ((chunk, collate([sequences[i] for i in chunk], tokenizer.pad_token_id, str(model.device))) for chunk in chunks)
        score = lambda batch: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    for indices, batch in batches:
        values = score(batch).float().tolist()
        for i, value in zip(indices, values):
            scores[i] = value
        if on_batch:
            on_batch(indices, values, [len(sequences[i]["input_ids"]) for i in indices])
    return scores


class RewardModelJudge(Judge):
    Options = RewardModelOptions
    NOT_IN_KEY = frozenset({"batch_size", "device", "temperature"})  # T is applied after the cache
    MODES = ("pointwise",)
    READS_RUBRIC = False

    def __init__(self, config: JudgeConfig):
        super().__init__(config)
        self.tokenizer = load_tokenizer(config.model, padding_side="right")
        self.model = load_reward_model(config.model, self.options.device).eval()

    @classmethod
    def identity(cls, config: JudgeConfig) -> dict[str, Any]:
        # The weights, not just the path: a directory trained again must not reuse old scores.
        try:
            resolve_model(config.model)  # a missing local model is an error now, in a dry run too, before anything loads
        except ConfigError as e:
            raise ConfigError(f"judge '{config.name}': {e}; a reward-model judge reads a trained reward model (the built-in `reward-model` "
                              "judge reads the one `make rm-judge` trains into outputs/rm-judge, from the repository root)") from None
        # max_length None (the model's own limit) is read from the model, which the fingerprint names.
        return {**super().identity(config), "model": model_fingerprint(config.model)}

    @classmethod
    def score_temperature(cls, options: RewardModelOptions) -> float:
        return options.temperature

    def judge(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        if not all(r.pointwise and r.response is not None for r in requests):
            raise ValueError("a reward-model judge scores single responses (mode 'pointwise')")

        def report(indices: list[int], scores: list[float], tokens: list[int]) -> None:
            for i, score, n in zip(indices, scores, tokens):
                on_result(i, Verdict(p_first=None, score=score, prompt_tokens=n))

        items = [(r.query, r.response) for r in requests]
        reward_scores(self.model, self.tokenizer, items, scoring_length(self.options, self.config.model), self.options.batch_size, report)  # type: ignore[arg-type]

    def close(self) -> None:
        del self.model
