"""Writing files so that a kill never leaves one half written: each is written beside its
target and renamed into place, whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonlines


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows to `path` as JSON lines."""
    tmp = path.with_name(path.name + ".tmp")
    with jsonlines.open(tmp, mode="w") as writer:
        writer.write_all(rows)
    tmp.replace(path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path`."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write one JSON document to `path`."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def save_into(directory: Path, save: Callable[[Path], None]) -> None:
    """Call `save(folder)` on an empty folder beside `directory`, then move each file it wrote
    into `directory` (each rename is atomic; files already there and not rewritten stay)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".saving.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save(tmp)
        for file in tmp.iterdir():
            os.replace(file, directory / file.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_stamp() -> dict[str, str]:
    """What every manifest starts with: the rlaif version that wrote it, and when."""
    return {"rlaif_version": version("rlaif"), "created": datetime.now(UTC).isoformat(timespec="seconds")}
