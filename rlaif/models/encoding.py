"""Tokenizing a prompt and a response for a causal LM or a reward model, and padding them into
a batch: the one encoding that training and inference share."""

from __future__ import annotations

from typing import Any

import torch

from rlaif.errors import InputError
from rlaif.inputs import Prompt
from rlaif.models.loading import chat_prompt


def encode_prompt(tokenizer, prompt: Prompt, max_length: int, source: str, truncate: bool, room: int = 1) -> tuple[list[int], bool]:
    """Prompt token ids, leaving `room` tokens for a response, and whether the prompt was cut.

    A prompt too long keeps its end with `truncate`, else it is an error naming the row.
    """
    ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    limit = max_length - room
    if len(ids) <= limit:
        return ids, False
    if not truncate:
        file, _, line = source.rpartition(":")
        raise InputError(file, int(line), "prompt", f"is {len(ids)} tokens, longer than --max-length {max_length} allows "
                                                    "(without --no-truncate-prompt its end is kept)")
    return ids[-limit:], True


def encode(tokenizer, prompt: Prompt, response: str, max_length: int, source: str, truncate: bool,
           room: int | None = None) -> dict[str, Any]:
    """input_ids and labels (−100 on prompt tokens) for one prompt + response (+ EOS), and
    `truncated`: whether anything was cut to fit `max_length`.

    With `truncate`, a long prompt gives up its beginning so that the response keeps its full
    length (up to half of `max_length`), or the `room` asked for: a reward or a DPO loss on
    cut-off responses compares little. Otherwise the response is what is cut.
    """
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    room = (min(len(response_ids), max_length // 2) if room is None else room) if truncate else 1
    prompt_ids, cut = encode_prompt(tokenizer, prompt, max_length, source, truncate, room)
    ids = prompt_ids + response_ids
    labels = [-100] * len(prompt_ids) + response_ids
    return {"input_ids": ids[:max_length], "labels": labels[:max_length], "truncated": cut or len(ids) > max_length}


def collate(features: list[dict[str, list[int]]], pad_id: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad to the longest: input_ids, attention_mask, labels (−100 on padding), on `device`."""
    width = max(len(f["input_ids"]) for f in features)
    batch: dict[str, Any] = {"input_ids": [], "attention_mask": [], "labels": []}
    for f in features:
        pad = width - len(f["input_ids"])
        batch["input_ids"].append(f["input_ids"] + [pad_id] * pad)
        batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        batch["labels"].append(f.get("labels", f["input_ids"]) + [-100] * pad)
    return {k: torch.tensor(v, device=device) for k, v in batch.items()}
