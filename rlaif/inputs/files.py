"""Reading records from input files and data sets: JSONL, JSON, CSV and Parquet (each may be
gzipped), saved data set folders, Hugging Face data sets (`hf:`), and `?rows=` slices. A file
that cannot be read (not UTF-8, not whole, not the format its name says) is an `InputError`
naming it and, where it can, the line."""

from __future__ import annotations

import gzip
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode

from rlaif.errors import InputError

STDIN, STDIN_NAME = "-", "<stdin>"  # `--input -` reads JSONL from standard input; errors name it <stdin>


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
    """A line (or a whole file, `number` 0) as text: UTF-8, a byte-order mark at the file's start
    allowed (Windows tools write one)."""
    try:
        return raw.decode("utf-8-sig" if number <= 1 else "utf-8")
    except UnicodeDecodeError as e:
        return InputError(str(path), number, None, f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                          "save the file as UTF-8")


def _parsed(text: str, path: Path, number: int) -> Any:
    """JSON text as a value, or an InputError naming the line (and the field) where it is not
    JSON, nests deeper than Python can read, or holds a string that is not Unicode text (a lone
    surrogate such as "\ud800", which no file or tokenizer can take)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return InputError(str(path), number or err.lineno, None, f"not valid JSON ({err.msg})")
    except RecursionError:
        return InputError(str(path), number or None, None, "JSON nested too deep to read")
    stack: list[tuple[str | None, Any]] = [(None, value)]
    while stack:
        field, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                return InputError(str(path), number or None, field, f"holds {item[e.start]!r}, half of a surrogate pair: not Unicode text")
        elif isinstance(item, dict):
            stack += [(field or str(k), v) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(field, v) for v in item]
    return value


def _base_suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    number = 0
    with _open_bytes(path) as fh, _readable(path, lambda: number + 1):
        for number, record in _jsonl_records(fh, path):
            yield number, record


def _jsonl_records(lines: Iterable[bytes], path: Path) -> Iterator[tuple[int, Any]]:
    for number, raw in enumerate(lines, start=1):
        # A bad line is yielded, not raised: a generator that raises is finished, and
        # `--skip-invalid` must read on past it.
        line = _decoded(raw, path, number)
        if isinstance(line, InputError) or not line.strip():
            if isinstance(line, InputError):
                yield number, line
            continue
        yield number, _parsed(line, path, number)


_stdin: tuple[Any, list[bytes]] | None = None  # the standard-input stream read, and its lines


def _read_stdin() -> Iterator[tuple[int, Any]]:
    """Standard input as JSONL (`--input -`), read whole once and kept: a command may read its
    input twice (every row checked, then used)."""
    global _stdin
    if _stdin is None or _stdin[0] is not sys.stdin:  # a new stream (a test's, an API caller's): read it
        _stdin = (sys.stdin, sys.stdin.buffer.read().splitlines(keepends=True))
    return _jsonl_records(_stdin[1], Path(STDIN_NAME))


def _read_json(path: Path) -> Iterator[tuple[int, Any]]:
    with _open_bytes(path) as fh, _readable(path):
        raw = fh.read()
    text = _decoded(raw, path, 0)
    if isinstance(text, InputError):
        bad = raw.decode("utf-8", errors="replace").index("\ufffd")
        raise InputError(str(path), raw[:bad].count(b"\n") + 1, None, text.message)
    data = _parsed(text, path, 0)
    if isinstance(data, InputError):
        raise data
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
        raise InputError(str(path), None, None, "not a saved data set (no dataset_info.json): "
                         "give a data file or a `save_to_disk` folder") from None
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


def shown_name(spec: str | Path) -> str:
    """An input as its errors name it: its spec, or <stdin>."""
    return STDIN_NAME if str(spec) == STDIN else str(spec)


def input_name(spec: str | Path) -> str:
    """A short name for an input, for default output folders and row ids: the file name less
    its suffixes, or a hub data set's name and split (a ``rows=`` selection keeps the name, so
    a row's id is the same in a slice as in the whole file)."""
    text, _ = split_rows(str(spec))
    if text == STDIN:
        return "stdin"
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
        raise InputError(spec, None, None, f"datasets.load_dataset({name!r}, "
                         f"{', '.join(f'{k}={v!r}' for k, v in options.items())}) failed: {e}") from None
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
    if str(path) == STDIN:
        return _read_stdin()
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
    raise InputError(str(path), None, None, f"unknown format '{suffix}': use .jsonl, .json, .csv, .parquet "
                     "(optionally .gz) or a saved dataset directory")
