"""Verdicts read after a pre-filled verdict prefix: what the in-process judges share (the local
transformers model, llama.cpp on a GGUF file, vLLM's engine) and the `prefilled` way of the
OpenAI-compatible judge.

The rubric is the user turn, rendered through the model's own chat template; the assistant turn
is written up to the rubric's verdict prefix (after a generated rationale with `--cot`); the soft
label is the next token's probability of each label, normalised over the labels. The model then
has no format to follow: whatever it would have written, its distribution at that token is the
verdict.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence

import torch

from rlaif.judging.base import Judge, JudgeRequest, Verdict
from rlaif.models.loading import chat_prompt


def label_token_ids(tokenizer, label: str) -> list[int]:
    """Token ids that spell `label` as one token (bare or after a space); else its first token."""
    ids = []
    for variant in (label, " " + label):
        tokens = tokenizer.encode(variant, add_special_tokens=False)
        if len(tokens) == 1 and tokens[0] not in ids:
            ids.append(tokens[0])
    return ids or tokenizer.encode(label, add_special_tokens=False)[:1]


def label_distribution(logits: torch.Tensor, tokenizer, labels: Sequence[str]) -> torch.Tensor:
    """The next token's probability of each label, normalised over the labels (a label's mass
    summed over the tokens that spell it): logits (B, vocab) -> (B, len(labels))."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    per_label = torch.stack([torch.logsumexp(logprobs[:, label_token_ids(tokenizer, label)], dim=-1) for label in labels], dim=-1)
    return torch.softmax(per_label, dim=-1)


def rationale(text: str, verdict_prefix: str) -> str:
    """A generated rationale up to any verdict it writes itself: the verdict is scored from the
    labels' probabilities, not taken from the rationale's own claim."""
    cut = text.find(verdict_prefix.strip())
    return (text[:cut] if cut >= 0 else text).strip()


def verdict_text(chat: str, request: JudgeRequest, rationale: str | None = None) -> str:
    """The text whose next token is the verdict: the rubric through the chat template (`chat`),
    the rationale if there is one, then the verdict prefix."""
    return chat + (f"{rationale}\n\n" if rationale else "") + request.verdict_prefix


class PrefilledJudge(Judge):
    """A judge that reads its verdict from the next token after a pre-filled verdict prefix: the
    rubric as the user turn, with `--cot` a generated rationale first. Subclasses load
    `self.tokenizer` (whose chat template renders the rubric) and say how their model generates
    rationales and gives the labels' probabilities, and how requests batch."""

    tokenizer: object
    context_length: int | None = None  # the most tokens the model reads at once, where known

    @abstractmethod
    def _rationales(self, chats: list[str], verdict_prefix: str) -> tuple[list[str], list[int]]:
        """A rationale per chat (cut before any verdict it writes), and its length in tokens."""

    @abstractmethod
    def label_probs(self, texts: list[str], labels: tuple[str, ...]) -> tuple[list[list[float]], list[int]]:
        """Per text, the next token's probability of each label, and the text's length in tokens."""

    def _batches(self, requests: Sequence[JudgeRequest]) -> list[list[int]]:
        """Indices of the requests that go to the model together (all at once by default)."""
        return [list(range(len(requests)))]

    def too_long(self, request: JudgeRequest) -> Verdict | None:
        """The answer to a request longer than the model's context (its rubric through the chat
        template, and the rationale it may write with --cot), decided before any call; else None."""
        if self.context_length is None:
            return None
        text = verdict_text(chat_prompt(self.tokenizer, request.prompt), request)
        need = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + self.completion_budget(self.options, request.cot) + 1
        if need <= self.context_length:
            return None
        return Verdict(None, error=f"prompt too long for the judge: {need} tokens with its answer, "
                                   f"the model reads {self.context_length}", too_long=True)

    def judge(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        fits = []
        for i, request in enumerate(requests):
            if (refused := self.too_long(request)) is not None:
                on_result(i, refused)
            else:
                fits.append(i)
        self._judge_all([requests[i] for i in fits], lambda j, verdict: on_result(fits[j], verdict))

    def _judge_all(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        for batch in self._batches(requests):
            for group in _by_format(requests, batch):
                reqs = [requests[i] for i in group]
                chats = [chat_prompt(self.tokenizer, r.prompt) for r in reqs]
                rationales: list[str | None] = [None] * len(reqs)
                generated = [0] * len(reqs)
                if reqs[0].cot:
                    rationales, generated = self._rationales(chats, reqs[0].verdict_prefix)  # type: ignore[assignment]
                texts = [verdict_text(chat, r, why) for chat, why, r in zip(chats, rationales, reqs)]
                probs, prompt_tokens = self.label_probs(texts, reqs[0].labels)
                for i, p, text, n_in, n_out in zip(group, probs, rationales, prompt_tokens, generated):
                    on_result(i, self.from_label_probs(requests[i], p, text=text, soft=True, prompt_tokens=int(n_in),
                                                       completion_tokens=n_out))


def _by_format(requests: Sequence[JudgeRequest], indices: list[int]) -> list[list[int]]:
    """Split a batch so every group shares labels, verdict prefix, cot and mode (one run has one)."""
    groups: dict[tuple, list[int]] = {}
    for i in indices:
        r = requests[i]
        groups.setdefault((r.labels, r.verdict_prefix, r.cot, r.pointwise), []).append(i)
    return list(groups.values())
