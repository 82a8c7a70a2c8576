"""A judge on a local transformers causal LM (the embedded SmolLM2-135M-Instruct by default).

The rubric goes in as the user turn; the assistant turn is pre-filled with the rubric's
verdict prefix (after a generated rationale with `--cot`), and the soft label is read from
the next-token probabilities of the verdict labels, normalised over them: the two responses'
labels of a pair, or the rating scale of one response (whose expected rating is its score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from rlaif.judging.backends.prefilled import PrefilledJudge, label_distribution, rationale
from rlaif.judging.base import JudgeConfig, JudgeRequest
from rlaif.models.loading import load_causal_lm, load_tokenizer
from rlaif.models.packing import common_prefix_length, pack


@dataclass
class LocalOptions:
    batch_size: int = 8
    max_new_tokens: int = 256  # rationale length, with --cot
    temperature: float = 0.0  # rationale sampling; 0 is greedy
    device: str | None = None
    bf16: bool = False


def left_padded(tokenizer, texts: list[str], device: str) -> dict[str, torch.Tensor]:
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = {k: v.to(device) for k, v in batch.items()}
    # Positions count real tokens only, so left padding does not shift them.
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return batch


PADDING = 1.25  # a batch's padded length over its real length, at most (a request longer than that starts the next batch)


class LocalJudge(PrefilledJudge):
    Options = LocalOptions
    NOT_IN_KEY = frozenset({"batch_size", "device"})

    def __init__(self, config: JudgeConfig):
        super().__init__(config)
        self.tokenizer = load_tokenizer(config.model, padding_side="left")
        self.model = load_causal_lm(config.model, self.options.device, self.options.bf16)
        self.device = str(self.model.device)
        self.context_length = getattr(self.model.config, "max_position_embeddings", None)
        self._prefix: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] = ([], [])

    @classmethod
    def completion_budget(cls, options: LocalOptions, cot: bool) -> int:
        return options.max_new_tokens if cot else 0

    @torch.no_grad()
    def _rationales(self, chats: list[str], verdict_prefix: str) -> tuple[list[str], list[int]]:
        batch = left_padded(self.tokenizer, chats, self.device)
        batch.pop("position_ids")  # generate() derives positions from the attention mask
        sample = self.options.temperature > 0
        out = self.model.generate(
            **batch,
            max_new_tokens=self.options.max_new_tokens,
            do_sample=sample,
            temperature=self.options.temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, batch["input_ids"].shape[1]:]
        texts, counts = [], []
        for row in new:
            texts.append(rationale(self.tokenizer.decode(row, skip_special_tokens=True), verdict_prefix))
            counts.append(int((row != self.tokenizer.pad_token_id).sum()))
        return texts, counts

    def _prefix_cache(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of every layer for a prefix; the last one is kept, since a run's
        batches all begin with the same rubric instructions."""
        if self._prefix[0] != ids:
            cache = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True).cache
            self._prefix = (ids, [(layer.keys, layer.values) for layer in cache.layers])
        return self._prefix[1]

    @torch.no_grad()
    def label_probs(self, texts: list[str], labels: tuple[str, ...]) -> tuple[list[list[float]], list[int]]:
        """Per text, the next token's probability of each label (normalised over the labels),
        and its length in tokens.

        One forward pass: the prefix all texts share (the rubric's instructions) is computed
        once into a KV cache, and texts sharing more than that (the two orders of a pair) go
        into one row as a prefix tree (`packing.pack`), so their common part is computed once.
        """
        seqs = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        shared = min(min(common_prefix_length(seqs[0], s) for s in seqs), min(map(len, seqs)) - 1)
        packed = pack(_rows([s[shared:] for s in seqs]), self.tokenizer.pad_token_id, self.device, start=shared)
        mask, cache = packed.attention_mask, None
        if shared:
            rows, width = packed.input_ids.shape
            cache = DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
                                  for k, v in self._prefix_cache(seqs[0][:shared])], config=self.model.config)
            mask = torch.cat([mask.new_ones(rows, 1, width, shared), mask], dim=-1)  # every token sees the prefix
        hidden = self.model.base_model(input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids,
                                       cache=cache).last_hidden_state
        last = torch.tensor([places[-1] for places in packed.places], device=self.device)
        logits = self.model.get_output_embeddings()(hidden.flatten(0, 1)[last])
        return label_distribution(logits, self.tokenizer, labels).tolist(), [len(s) for s in seqs]

    def _batches(self, requests: Sequence[JudgeRequest]) -> list[list[int]]:
        # Similar lengths batch together, and a pair's two orders, as long as each other, sit side
        # by side (one packed row). A batch also closes where the next request, the longest so
        # far, would pad it past PADDING of its real length: a few requests of scattered lengths
        # (a server's batch) are not all padded to the longest.
        order = sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt), requests[i].prompt))
        batches: list[list[int]] = []
        for i in order:
            n = len(requests[i].prompt)
            last = batches[-1] if batches else []
            if (last and len(last) < self.options.batch_size
                    and n * (len(last) + 1) <= PADDING * (sum(len(requests[j].prompt) for j in last) + n)):
                last.append(i)
            else:
                batches.append([i])
        return batches

    def close(self) -> None:
        del self.model


def _rows(seqs: list[list[int]]) -> list[list[list[int]]]:
    """Rows of the packed batch: two consecutive sequences that begin alike (a pair's two
    orders) share one; no more than two, since attention grows with the square of a row's length."""
    rows: list[list[list[int]]] = []
    for seq in seqs:
        if rows and len(rows[-1]) == 1 and common_prefix_length(rows[-1][0], seq) > 1:
            rows[-1].append(seq)
        else:
            rows.append([seq])
    return rows

