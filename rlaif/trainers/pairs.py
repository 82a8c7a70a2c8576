"""Training data: preference pairs and prompts read from any input `rlaif label` reads, held-out splits, and the pairs encoded for a model."""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from typing import Any

from rlaif.errors import ConfigError, InputError
from rlaif.inputs import Prompt, load_examples
from rlaif.models.encoding import encode


@dataclass
class TrainPair:
    """prompt, chosen, rejected and p = P(chosen ≻ rejected) (1.0 for a human label)."""

    prompt: Prompt
    chosen: str
    rejected: str
    p: float
    source: str


def load_pairs(path: str, limit: int | None = None, hard_labels: bool = False) -> list[TrainPair]:
    """Pairs from anything `rlaif label` reads or writes; rows with no preference, and pairs whose
    two responses are the same text (they teach nothing, and labeling skips them too), are left
    out and counted on standard error."""
    pairs, same = [], 0
    for ex in load_examples(path, limit).examples:
        if len(ex.responses) != 2:
            continue
        if ex.responses[0].strip() == ex.responses[1].strip():
            same += 1
            continue
        if ex.preference is not None:  # an rlaif output row: responses = [chosen, rejected]
            p = 1.0 if hard_labels else float(ex.preference)
        elif ex.human_best is not None:
            p = 1.0
        else:
            continue
        chosen, rejected = ex.responses  # the preferred one first in every input shape
        pairs.append(TrainPair(ex.prompt, chosen, rejected, p, ex.source))
    if not pairs:
        raise InputError(str(path), None, None, "no usable preference pairs (rows need prompt/chosen/rejected, HH transcripts, or rlaif's pairs.jsonl"
                         + (f"; {same} rows have the same response twice" if same else "") + ")")
    if same:
        print(f"{path}: {same} pairs left out: their two responses are the same text", file=sys.stderr)
    return pairs


def train_eval_pairs(config) -> tuple[list[TrainPair], list[TrainPair]]:
    """The training pairs and the held-out pairs (`--eval-data`, else an `--eval-split` of `--data`)."""
    pairs = load_pairs(config.data, config.limit, config.hard_labels)
    if config.eval_data:
        return pairs, load_pairs(config.eval_data, None, config.hard_labels)
    return split(pairs, config.eval_split, config.seed, config.eval_fold)


def load_prompts(path: str, limit: int | None = None) -> list[tuple[Prompt, str]]:
    """(prompt, source) of every row, for PPO rollouts."""
    prompts = [(ex.prompt, ex.source) for ex in load_examples(path, limit).examples]
    if not prompts:
        raise InputError(str(path), None, None, "no prompts")
    return prompts


def split(items: list, share: float, seed: int, fold: int = 0) -> tuple[list, list]:
    """A seeded held-out split: (train, eval) with round(share · n) items in eval.

    `fold` k holds out the k-th such slice of the same shuffled order, so folds 0 … 1/share − 1
    are the disjoint held-out sets of a cross-validation.
    """
    if share <= 0:
        return items, []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(share * len(items)))
    if not 0 <= fold * n_eval < len(items):
        raise ConfigError(f"eval_fold {fold} is out of range: {len(items)} items make {math.ceil(len(items) / n_eval)} folds of {n_eval}")
    held = set(order[fold * n_eval:(fold + 1) * n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


EncodedPair = tuple[dict[str, Any], dict[str, Any], float]


def encode_pair(tokenizer, pair: TrainPair, max_length: int, truncate: bool) -> EncodedPair:
    """The chosen and the rejected sequence of a pair (each prompt + response), and its p. A
    prompt too long is cut once for both, as the longer response needs: the two sequences then
    share it whole, so both responses are read in the same context and a packed pair computes
    it once."""
    longer = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in (pair.chosen, pair.rejected)) + 1  # with its EOS
    room = min(longer, max_length // 2)
    chosen = encode(tokenizer, pair.prompt, pair.chosen, max_length, pair.source, truncate, room)
    rejected = encode(tokenizer, pair.prompt, pair.rejected, max_length, pair.source, truncate, room)
    return chosen, rejected, pair.p


def encoded_train_eval_pairs(tokenizer, config, eval_max_length: int | None = None) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """Training and held-out pairs, tokenized: the held-out ones cut at `eval_max_length` if
    given, else at --max-length as the training pairs are."""
    train, held = train_eval_pairs(config)
    return (
        [encode_pair(tokenizer, p, config.max_length, config.truncate_prompt) for p in train],
        [encode_pair(tokenizer, p, eval_max_length or config.max_length, config.truncate_prompt) for p in held],
    )


def truncated_rows(pairs: list[EncodedPair]) -> int:
    """How many pairs had their chosen or rejected sequence cut to fit --max-length."""
    return sum(chosen["truncated"] or rejected["truncated"] for chosen, rejected, _ in pairs)
