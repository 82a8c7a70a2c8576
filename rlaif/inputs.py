"""Reading labeling input: files in several formats and row shapes, checked row by row.

Row shapes (each row is one prompt):
1. ``prompt`` + ``responses``: two or more candidates;
2. ``prompt`` + ``chosen`` + ``rejected``: a human-labeled pair;
3. ``chosen`` + ``rejected`` whole transcripts (``\\n\\nHuman: ... \\n\\nAssistant: ...``);
4. ``prompt`` alone: candidates are generated later.
A prompt is a string or a list of chat messages (``{"role": ..., "content": ...}``).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode

from rlaif.errors import InputError

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


@dataclass
class Pair:
    """Two responses to compare; `human` is 1.0 if the human preferred `a`, 0.0 if `b`."""

    id: str
    prompt: Prompt
    a: str
    b: str
    human: float | None = None


@dataclass
class LoadResult:
    examples: list[Example]
    failures: list[dict[str, Any]]


# ---------------------------------------------------------------- reading files


def _open_bytes(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


@contextmanager
def _readable(path: Path, line: Callable[[], int | None] = lambda: None) -> Iterator[None]:
    """Turn what a broken file raises while it is read (a compressed file that does not
    decompress, bytes cut short) into an `InputError` naming the file and, where known, the line
    reached (`line()`)."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise InputError(str(path), line(), None, f"not a whole gzip file ({e or 'it ends early'})") from None


def _decoded(raw: bytes, path: Path, number: int) -> str | InputError:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return InputError(str(path), number, None, f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); save the file as UTF-8")


def _base_suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    number = 0
    with _open_bytes(path) as fh, _readable(path, lambda: number + 1):
        for number, raw in enumerate(fh, start=1):
            # A bad line is yielded, not raised: a generator that raises is finished, and
            # `--skip-invalid` must read on past it.
            line = _decoded(raw, path, number)
            if isinstance(line, InputError) or not line.strip():
                if isinstance(line, InputError):
                    yield number, line
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, InputError(str(path), number, None, f"not valid JSON ({err.msg})")


def _read_json(path: Path) -> Iterator[tuple[int, Any]]:
    with _open_bytes(path) as fh, _readable(path):
        raw = fh.read()
    text = _decoded(raw, path, 0)
    if isinstance(text, InputError):
        bad = raw.decode("utf-8", errors="replace").index("\ufffd")
        raise InputError(str(path), raw[:bad].count(b"\n") + 1, None, text.message)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(str(path), err.lineno, None, f"not valid JSON ({err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise InputError(str(path), None, None, "expected a JSON list of records")
    yield from enumerate(data, start=1)


def _read_with_datasets(path: Path, kind: str) -> Iterator[tuple[int, Any]]:
    import datasets

    # CSV rows are numbered as lines of the file (line 1 is the header).
    number = start = 2 if kind == "csv" else 1
    try:
        if kind == "dir":
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        else:  # streamed: a file larger than memory is read a batch at a time
            ds = datasets.load_dataset(kind, data_files=str(path), split="train", streaming=True)
        for number, record in enumerate(ds, start=start):
            yield number, record
    except FileNotFoundError:
        raise InputError(str(path), None, None, "not a saved data set (no dataset_info.json): give a data file or a `save_to_disk` folder") from None
    except Exception as e:  # noqa: BLE001 -- pyarrow and datasets raise many kinds for a file they cannot read
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = "" if kind == "dir" or number == start else f" (after record {number - start})"
        raise InputError(str(path), None, None, f"cannot be read as {kind}{where}: {reason}") from None


HUB_PREFIX = "hf:"
HUB_OPTIONS = ("name", "data_dir", "split", "revision")


def parse_hub_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``hf:OWNER/NAME?data_dir=DIR&split=SPLIT`` (also ``name=CONFIG``, ``revision=REV``) ->
    the data set's name or local folder, and the keyword arguments of `datasets.load_dataset`."""
    name, _, query = spec[len(HUB_PREFIX):].partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(HUB_OPTIONS))
    if unknown or not name:
        problem = f"unknown option(s) {', '.join(unknown)}" if unknown else "no data set name"
        raise InputError(spec, None, None, f"{problem}: expected hf:OWNER/NAME?{'&'.join(o + '=...' for o in HUB_OPTIONS)}")
    return name, {"split": "train", **options}


def split_rows(spec: str) -> tuple[str, slice | None]:
    """``SOURCE?rows=START:END`` -> SOURCE and the records [START, END) to keep, counted from 0
    in the source's order (either end may be left out). In an ``hf:`` spec ``rows`` is one more
    option: ``hf:OWNER/NAME?split=test&rows=0:500``."""
    base, _, query = spec.partition("?")
    options = parse_qsl(query, keep_blank_values=True)
    rows = [value for key, value in options if key == "rows"]
    if not rows:
        return spec, None
    bounds = re.fullmatch(r"(\d*):(\d*)", rows[-1])
    if bounds is None:
        raise InputError(spec, None, None, f"rows={rows[-1]}: expected rows=START:END, two whole numbers (either may be left out)")
    rest = urlencode([(key, value) for key, value in options if key != "rows"], safe="/")
    start, stop = (int(b) if b else None for b in bounds.groups())
    return base + (f"?{rest}" if rest else ""), slice(start, stop)


def input_name(spec: str | Path) -> str:
    """A short name for an input, for default output folders and row ids: the file name less
    its suffixes, or a hub data set's name and split (a ``rows=`` selection keeps the name, so
    a row's id is the same in a slice as in the whole file)."""
    text, _ = split_rows(str(spec))
    if text.startswith(HUB_PREFIX):
        name, options = parse_hub_spec(text)
        return "-".join([Path(name).name, *(options[k] for k in ("name", "data_dir") if options.get(k)), options["split"]])
    return Path(text).name.split(".")[0]


def _read_hub(spec: str) -> Iterator[tuple[int, Any]]:
    import datasets

    name, options = parse_hub_spec(spec)
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(name, **options)
    except (OSError, ValueError) as e:  # not found, no network, no such split or config
        raise InputError(spec, None, None, f"datasets.load_dataset({name!r}, {', '.join(f'{k}={v!r}' for k, v in options.items())}) failed: {e}") from None
    yield from enumerate(ds, start=1)


def read_records(spec: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line or record number, raw record) from JSONL, JSON, CSV, Parquet, a saved dataset,
    or a Hugging Face data set (``hf:OWNER/NAME?data_dir=...&split=...``: see `parse_hub_spec`);
    ``?rows=START:END`` after any of them keeps those records only (see `split_rows`).

    A JSONL line that is not JSON is yielded as an `InputError` in place of its record.
    """
    path, rows = split_rows(str(spec))
    records = _read_source(path)
    return records if rows is None else islice(records, rows.start, rows.stop)


def _read_source(path: str | Path) -> Iterator[tuple[int, Any]]:
    if str(path).startswith(HUB_PREFIX):
        return _read_hub(str(path))
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), None, None, "no such file or directory")
    if path.is_dir():
        return _read_with_datasets(path, "dir")
    suffix = _base_suffix(path)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".csv", ".parquet"):
        return _read_with_datasets(path, suffix[1:])
    raise InputError(str(path), None, None, f"unknown format '{suffix}': use .jsonl, .json, .csv, .parquet (optionally .gz) or a saved dataset directory")


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


def _check_prompt(value: Any, err) -> Prompt:
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


def _check_text(value: Any, name: str, err) -> str:
    # TRL's conversational format wraps a reply as [{"role": "assistant", "content": ...}].
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("content")
    if not isinstance(value, str):
        raise err(name, f"expected a string, got {type(value).__name__}")
    return value


def parse_record(record: Any, file: str, line: int) -> Example:
    """Turn one raw record into an `Example`, or raise `InputError` naming the field."""

    def err(field_name: str | None, message: str) -> InputError:
        return InputError(file, line, field_name, message)

    if not isinstance(record, dict):
        raise err(None, f"expected an object, got {type(record).__name__}")
    ident = str(record["id"]) if record.get("id") is not None else f"{input_name(file)}-{line}"
    source = f"{file}:{line}"
    has_pair = "chosen" in record or "rejected" in record
    if "responses" in record:
        prompt = _check_prompt(record.get("prompt"), err) if "prompt" in record else None
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
        chosen = _check_text(record["chosen"], "chosen", err)
        rejected = _check_text(record["rejected"], "rejected", err)
        preference = record.get("ai_preference")
        if preference is not None and (not isinstance(preference, (int, float)) or not 0.0 <= preference <= 1.0):
            raise err("ai_preference", f"expected a probability in [0, 1], got {preference!r}")
        human_best = 0
        if preference is not None:
            # An rlaif output row: `chosen` is the AI's pick; the human's, if any, is `human_preference`.
            human = record.get("human_preference")
            human_best = None if human is None else (0 if human > 0.5 else 1)
        if "prompt" in record:
            return Example(ident, _check_prompt(record["prompt"], err), [chosen, rejected], human_best, source, preference)
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
        return Example(ident, _check_prompt(record["prompt"], err), [], None, source)
    raise err(None, f"no usable fields (found {sorted(record)}); expected 'prompt' with 'responses' or 'chosen'/'rejected', transcripts 'chosen'/'rejected', or 'prompt' alone")


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
            example = parse_record(record, str(path), line)
            if (seen := first_line.setdefault(example.id, line)) != line:
                raise InputError(str(path), line, "id", f"{example.id!r} is also the id of line {seen}: give each row its own id (or none, and rlaif numbers them)")
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
                pairs.append(Pair(pair_id, ex.prompt, a, b, human))
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
