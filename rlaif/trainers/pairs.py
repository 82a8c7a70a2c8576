"""Training data: preference pairs and prompts read from any input `rlaif label` reads, held-out
splits, and the pairs encoded for a model."""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from rlaif.errors import ConfigError, InputError
from rlaif.inputs import Prompt, load_examples, read_records
from rlaif.inputs.files import shown_name
from rlaif.inputs.rows import check_prompt, check_text, check_weight, parse_record
from rlaif.models.encoding import encode


@dataclass
class TrainPair:
    """prompt, chosen, rejected, p = P(chosen ≻ rejected) (1.0 for a human label) and the pair's
    weight in a loss (`--weights`)."""

    prompt: Prompt
    chosen: str
    rejected: str
    p: float
    source: str
    weight: float = 1.0


def example_weight(rule: str, column: float | None, p: float | None) -> float:
    """A training example's weight by --weights: `column`, its row's `weight` (1 without one);
    `confidence`, |2p − 1| of its preference p (1 for a human label); `none`, 1."""
    if rule == "column":
        return 1.0 if column is None else column
    if rule == "confidence":
        return 1.0 if p is None else abs(2 * p - 1)
    return 1.0


def load_pairs(path: str, limit: int | None = None, hard_labels: bool = False, weights: str = "column") -> list[TrainPair]:
    """Pairs from anything `rlaif label` reads or writes, each weighted by the rule `weights`
    (`example_weight`); rows with no preference, and pairs whose two responses are the same text
    (they teach nothing, and labeling skips them too), are left out and counted on standard error."""
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
        pairs.append(TrainPair(ex.prompt, chosen, rejected, p, ex.source, example_weight(weights, ex.weight, ex.preference)))
    if not pairs:
        raise InputError(str(path), None, None, "no usable preference pairs (rows need prompt/chosen/rejected, "
                         "HH transcripts, or rlaif's pairs.jsonl"
                         + (f"; {same} rows have the same response twice" if same else "") + ")")
    if same:
        print(f"{path}: {same} pairs left out: their two responses are the same text", file=sys.stderr)
    return pairs


def train_eval_pairs(config) -> tuple[list[TrainPair], list[TrainPair]]:
    """The training pairs and the held-out pairs (`--eval-data`, else an `--eval-split` of `--input`)."""
    pairs = load_pairs(config.data, config.limit, config.hard_labels, config.weights)
    if config.eval_data:
        return pairs, load_pairs(config.eval_data, None, config.hard_labels, config.weights)
    return split(pairs, config.eval_split, config.seed, config.eval_fold)


@dataclass
class UnpairedRow:
    """A prompt and one response, labeled desirable or not (KTO's rows), with its weight."""

    prompt: Prompt
    completion: str
    desirable: bool
    source: str
    weight: float = 1.0


def load_unpaired(path: str, limit: int | None = None, threshold: float | None = None, weights: str = "column") -> list[UnpairedRow]:
    """KTO's rows from `path`, in one of three shapes, row by row:
    - `prompt`, `completion` and `label` (true: desirable), TRL's unpaired format; or `score`
      in place of `label`, desirable at `threshold` or more;
    - a preference pair (any shape `load_pairs` reads): its chosen response desirable and its
      rejected one not; with `threshold`, each by its own score instead (the `scores` a
      pointwise judge wrote into pairs.jsonl);
    rows with no label are left out. Weights as `example_weight` says (`confidence` reads a
    pair's preference; an unpaired row has none, so 1)."""
    rows: list[UnpairedRow] = []
    read = 0
    for line, record in read_records(path):
        if limit is not None and read >= limit:
            break
        read += 1
        if isinstance(record, InputError):
            raise record
        if isinstance(record, dict) and "completion" in record:
            rows.append(_unpaired_row(record, shown_name(path), line, threshold, weights))
            continue
        ex = parse_record(record, shown_name(path), line)
        if (len(ex.responses) != 2 or (ex.preference is None and ex.human_best is None)
                or ex.responses[0].strip() == ex.responses[1].strip()):
            continue
        weight = example_weight(weights, ex.weight, ex.preference)
        desirable = (True, False)
        if threshold is not None:
            scores = {s.get("response"): s.get("score") for s in record.get("scores") or [] if isinstance(s, dict)}
            if not all(isinstance(scores.get(k), int | float) for k in ("chosen", "rejected")):
                raise InputError(shown_name(path), line, "scores", "--desirable-threshold reads each response's score, "
                                 "and this pair has none (label with --mode pointwise, or give rows of prompt, "
                                 "completion and score)")
            desirable = (scores["chosen"] >= threshold, scores["rejected"] >= threshold)
        rows += [UnpairedRow(ex.prompt, text, good, ex.source, weight) for text, good in zip(ex.responses, desirable)]
    if not rows:
        raise InputError(shown_name(path), None, None, "no labeled rows (rows need prompt, completion and label, or a preference pair)")
    return rows


def _unpaired_row(record: dict[str, Any], file: str, line: int, threshold: float | None, weights: str) -> UnpairedRow:
    def err(field: str, message: str) -> InputError:
        return InputError(file, line, field, message)

    prompt = check_prompt(record.get("prompt"), err)
    completion = check_text(record["completion"], "completion", err)
    if threshold is not None and "score" in record:
        score = record["score"]
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise err("score", f"expected a number, got {score!r}")
        desirable = score >= threshold
    elif isinstance(record.get("label"), bool):
        desirable = record["label"]
    elif "score" in record:
        raise err("label", "missing: a row with a `score` is labeled by --desirable-threshold, which was not given")
    else:
        raise err("label", f"expected true (desirable) or false, got {record.get('label')!r}"
                  + ("" if threshold is None else "; or give a `score` to compare with --desirable-threshold"))
    column = check_weight(record["weight"], file, line) if record.get("weight") is not None else None
    return UnpairedRow(prompt, completion, desirable, f"{file}:{line}", example_weight(weights, column, None))


def unpaired_train_eval(config) -> tuple[list[UnpairedRow], list[UnpairedRow]]:
    """KTO's training and held-out rows (`--eval-data`, else an `--eval-split` of `--input`)."""
    rows = load_unpaired(config.data, config.limit, config.desirable_threshold, config.weights)
    if config.eval_data:
        return rows, load_unpaired(config.eval_data, None, config.desirable_threshold, config.weights)
    return split(rows, config.eval_split, config.seed, config.eval_fold)


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


class EncodedPair(NamedTuple):
    """A pair tokenized: its chosen and rejected sequence (`encode`'s), its label p and weight."""

    chosen: dict[str, Any]
    rejected: dict[str, Any]
    p: float
    weight: float = 1.0


def encode_pair(tokenizer, pair: TrainPair, max_length: int, truncate: bool) -> EncodedPair:
    """The chosen and the rejected sequence of a pair (each prompt + response), and its p. A
    prompt too long is cut once for both, as the longer response needs: the two sequences then
    share it whole, so both responses are read in the same context and a packed pair computes
    it once."""
    longer = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in (pair.chosen, pair.rejected)) + 1  # with its EOS
    room = min(longer, max_length // 2)
    chosen = encode(tokenizer, pair.prompt, pair.chosen, max_length, pair.source, truncate, room)
    rejected = encode(tokenizer, pair.prompt, pair.rejected, max_length, pair.source, truncate, room)
    return EncodedPair(chosen, rejected, pair.p, pair.weight)


def encoded_train_eval_pairs(tokenizer, config, eval_max_length: int | None = None) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """Training and held-out pairs, tokenized: the held-out ones cut at `eval_max_length` if
    given, else at --max-length as the training pairs are."""
    train, held = train_eval_pairs(config)
    return (
        [encode_pair(tokenizer, p, config.max_length, config.truncate_prompt) for p in train],
        [encode_pair(tokenizer, p, eval_max_length or config.max_length, config.truncate_prompt) for p in held],
    )


def labels_and_weights(pairs: list[EncodedPair], device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs' labels p and weights as (B,) tensors (a weight of 1 is exact: ℓ · 1.0 = ℓ)."""
    return torch.tensor([pair.p for pair in pairs], device=device), torch.tensor([pair.weight for pair in pairs], device=device)


def truncated_rows(pairs: list[EncodedPair]) -> int:
    """How many pairs had their chosen or rejected sequence cut to fit --max-length."""
    return sum(pair.chosen["truncated"] or pair.rejected["truncated"] for pair in pairs)
