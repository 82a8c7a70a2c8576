"""Input rows, checked one by one, and the pairs they make.

Row shapes (each row is one prompt):
1. ``prompt`` + ``responses``: two or more candidates;
2. ``prompt`` + ``chosen`` + ``rejected``: a human-labeled pair;
3. ``chosen`` + ``rejected`` whole transcripts (``\\n\\nHuman: ... \\n\\nAssistant: ...``);
4. ``prompt`` alone: candidates are generated later.
A prompt is a string or a list of chat messages (``{"role": ..., "content": ...}``).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.errors import InputError
from rlaif.inputs.files import input_name, read_records, shown_name

Prompt = str | list[dict[str, str]]

ROLES = ("system", "user", "assistant")
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


@dataclass
class Example:
    """One prompt and its candidate responses; `human_best` indexes the human's pick."""

    id: str
    prompt: Prompt
    responses: list[str] = field(default_factory=list)
    human_best: int | None = None
    source: str = ""
    preference: float | None = None  # P(responses[0] ≻ responses[1]), from `ai_preference`
    reference: str | None = None  # a reference answer, for rubrics that grade against one
    weight: float | None = None  # how much the row counts in a training loss, from its `weight`


@dataclass
class Pair:
    """Two responses to compare; `human` is 1.0 if the human preferred `a`, 0.0 if `b`."""

    id: str
    prompt: Prompt
    a: str
    b: str
    human: float | None = None
    reference: str | None = None


@dataclass
class LoadResult:
    examples: list[Example]
    failures: list[dict[str, Any]]


# ---------------------------------------------------------------- checking rows


def split_transcript(text: str) -> tuple[list[dict[str, str]], str]:
    """Split a ``\\n\\nHuman: ... \\n\\nAssistant: ...`` transcript at its last assistant turn.

    Returns the conversation before that turn (as chat messages) and the final reply.
    """
    parts = _TURN.split(text)
    # parts = [preamble, role, content, role, content, ...]
    if len(parts) < 3 or parts[-2] != "Assistant":
        raise ValueError("expected a transcript ending in an '\\n\\nAssistant:' turn")
    messages = [
        {"role": "user" if role == "Human" else "assistant", "content": content.strip()}
        for role, content in zip(parts[1:-2:2], parts[2:-2:2])
    ]
    if parts[0].strip():
        messages.insert(0, {"role": "user", "content": parts[0].strip()})
    if not messages:
        raise ValueError("the transcript has no turn before its last assistant reply")
    return messages, parts[-1].strip()


def check_prompt(value: Any, err) -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise err("prompt", "is empty")
        return value
    if isinstance(value, list) and value:
        for i, message in enumerate(value):
            if not isinstance(message, dict):
                raise err("prompt", f"message {i} is {type(message).__name__}, expected an object with 'role' and 'content'")
            if message.get("role") not in ROLES:
                raise err("prompt", f"message {i} has role {message.get('role')!r}, expected one of {', '.join(ROLES)}")
            if not isinstance(message.get("content"), str):
                raise err("prompt", f"message {i} has no string 'content'")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise err("prompt", f"expected a string or a non-empty list of chat messages, got {type(value).__name__}")


def check_text(value: Any, name: str, err) -> str:
    # TRL's conversational format wraps a reply as [{"role": "assistant", "content": ...}].
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("content")
    if not isinstance(value, str):
        raise err(name, f"expected a string, got {type(value).__name__}")
    return value


def parse_record(record: Any, file: str, line: int) -> Example:
    """Turn one raw record into an `Example`, or raise `InputError` naming the field. Any row
    shape may carry a `reference` answer (a string), which reference-guided rubrics read, and a
    `weight` (a number, 0 or more), which training losses read."""
    example = _parse_fields(record, file, line)
    if record.get("reference") is not None:
        example.reference = check_text(record["reference"], "reference", lambda field, message: InputError(file, line, field, message))
    if record.get("weight") is not None:
        example.weight = check_weight(record["weight"], file, line)
    return example


def check_weight(value: Any, file: str, line: int) -> float:
    """A row's `weight`: a finite number, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InputError(file, line, "weight", f"expected a number, 0 or more, got {value!r}")
    return float(value)


def _parse_fields(record: Any, file: str, line: int) -> Example:

    def err(field_name: str | None, message: str) -> InputError:
        return InputError(file, line, field_name, message)

    if not isinstance(record, dict):
        raise err(None, f"expected an object, got {type(record).__name__}")
    ident = str(record["id"]) if record.get("id") is not None else f"{input_name(file)}-{line}"
    source = f"{file}:{line}"
    has_pair = "chosen" in record or "rejected" in record
    if "responses" in record:
        prompt = check_prompt(record.get("prompt"), err) if "prompt" in record else None
        if prompt is None:
            raise err("prompt", "missing (rows with 'responses' need a 'prompt')")
        responses = record["responses"]
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise err("responses", "expected a list of strings")
        if len(responses) < 2:
            raise err("responses", f"expected two or more candidates, got {len(responses)}")
        return Example(ident, prompt, list(responses), None, source)
    if has_pair:
        for name in ("chosen", "rejected"):
            if name not in record:
                raise err(name, "missing ('chosen' and 'rejected' come together)")
        chosen = check_text(record["chosen"], "chosen", err)
        rejected = check_text(record["rejected"], "rejected", err)
        preference = record.get("ai_preference")
        if preference is not None and (not isinstance(preference, (int, float)) or not 0.0 <= preference <= 1.0):
            raise err("ai_preference", f"expected a probability in [0, 1], got {preference!r}")
        human_best = 0
        if preference is not None:
            # An rlaif output row: `chosen` is the AI's pick; the human's, if any, is `human_preference`.
            human = record.get("human_preference")
            human_best = None if human is None else (0 if human > 0.5 else 1)
        if "prompt" in record:
            return Example(ident, check_prompt(record["prompt"], err), [chosen, rejected], human_best, source, preference)
        try:
            prompt_c, reply_c = split_transcript(chosen)
        except ValueError as e:
            raise err("chosen", f"no 'prompt' given and not a transcript: {e}") from None
        try:
            prompt_r, reply_r = split_transcript(rejected)
        except ValueError as e:
            raise err("rejected", f"no 'prompt' given and not a transcript: {e}") from None
        if prompt_c != prompt_r:
            raise err("rejected", "the two transcripts differ before their last assistant turn")
        return Example(ident, prompt_c, [reply_c, reply_r], 0, source)
    if "prompt" in record:
        return Example(ident, check_prompt(record["prompt"], err), [], None, source)
    raise err(None, f"no usable fields (found {sorted(record)}); expected 'prompt' with 'responses' or 'chosen'/'rejected', "
                    "transcripts 'chosen'/'rejected', or 'prompt' alone")


def iter_examples(path: str | Path, limit: int | None = None, skip_invalid: bool = False) -> Iterator[Example | dict[str, Any]]:
    """Read and check `path` row by row, holding one row at a time: each valid row as an
    `Example` (at most `limit`), each invalid one as its failure record with `skip_invalid`;
    without it the first bad row raises."""
    count = 0
    first_line: dict[str, int] = {}  # row ids key the output and a resume: each must be one row's
    for line, record in read_records(path):
        if limit is not None and count >= limit:
            return
        try:
            if isinstance(record, InputError):
                raise record
            example = parse_record(record, shown_name(path), line)
            if (seen := first_line.setdefault(example.id, line)) != line:
                raise InputError(shown_name(path), line, "id", f"{example.id!r} is also the id of line {seen}: "
                                                               "give each row its own id (or none, and rlaif numbers them)")
        except InputError as e:
            if not skip_invalid:
                raise
            yield e.to_record()
            continue
        count += 1
        yield example


def load_examples(path: str | Path, limit: int | None = None, skip_invalid: bool = False) -> LoadResult:
    """Every row of `path` in memory (see `iter_examples`)."""
    result = LoadResult([], [])
    for item in iter_examples(path, limit, skip_invalid):
        (result.examples if isinstance(item, Example) else result.failures).append(item)
    return result


# ---------------------------------------------------------------- forming pairs


SKIP_REASONS = ("empty_response", "identical_responses")  # why a pair of candidates is not judged


def make_pairs(examples: list[Example], seed: int = 0) -> tuple[list[Pair], dict[str, int]]:
    """All pairs of each example's candidates; identical or empty responses are skipped.

    Human-labeled pairs are put in a seeded random A/B order, so that a judge's position
    bias can never line up with the human label by construction.
    """
    pairs: list[Pair] = []
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    for ex in examples:
        for i in range(len(ex.responses)):
            for j in range(i + 1, len(ex.responses)):
                a, b = ex.responses[i], ex.responses[j]
                if not a.strip() or not b.strip():
                    skipped["empty_response"] += 1
                    continue
                if a.strip() == b.strip():
                    skipped["identical_responses"] += 1
                    continue
                pair_id = f"{ex.id}:{i}-{j}"
                human = None
                if ex.human_best is not None:
                    human = 1.0 if ex.human_best == i else 0.0 if ex.human_best == j else None
                    if random.Random(f"{seed}:{pair_id}").random() < 0.5:
                        a, b = b, a
                        human = None if human is None else 1.0 - human
                pairs.append(Pair(pair_id, ex.prompt, a, b, human, ex.reference))
    return pairs, skipped


def as_messages(value: Prompt, role: str) -> list[dict[str, str]]:
    """A text as one chat message from `role`; a list of messages as it is."""
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def prompt_text(prompt: Prompt) -> str:
    """A prompt as plain text: a single user turn as is, a conversation as a transcript."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in prompt)
