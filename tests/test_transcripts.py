"""The transcripts in the docs are what the program prints. A console block right after a
`<!-- transcript -->` line is run command by command, in a scratch directory that sees the
repository's `examples/`, and what each `$ rlaif ...` printed must equal the lines after it,
numbers and timings masked (so a figure may move, a changed line may not). After a change to
what a command prints, regenerate the blocks and read the diff:

    RLAIF_WRITE_TRANSCRIPTS=1 pytest tests/test_transcripts.py
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- transcript -->"
NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?")


def blocks(page: Path) -> list[tuple[int, int, list[tuple[str, list[str]]]]]:
    """(first line index, end line index, [(command, expected output lines)]) of each marked
    block of `page`, read afresh (a regenerated block above moves those below)."""
    found = []
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        assert lines[i + 1].startswith("```console"), f"{page.name}:{i + 2}: a transcript is a ```console block"
        steps: list[tuple[str, list[str]]] = []
        j = i + 2
        while not lines[j].startswith("```"):
            if lines[j].startswith("$ "):
                steps.append((lines[j][2:], []))
            else:
                steps[-1][1].append(lines[j])
            j += 1
        found.append((i + 2, j, steps))
    return found


def masked(lines: list[str]) -> list[str]:
    """Lines with every number as N and runs of spaces as one (table columns widen with numbers)."""
    return [re.sub(r" +", " ", NUMBER.sub("N", line)).rstrip() for line in lines]


def run(command: str, cwd: Path) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "rlaif", f"a transcript runs rlaif commands only: {command}"
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "COLUMNS": "100"}
    command = [sys.executable, "-c", "from rlaif.cli import main; main(prog_name='rlaif')", *words[1:]]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    return (done.stdout + done.stderr).replace(str(cwd) + "/", "").replace(str(ROOT) + "/", "").rstrip("\n").splitlines()


TRANSCRIPTS = [(page, k) for page in PAGES for k in range(len(blocks(page)))]


def test_the_docs_have_transcripts():
    commands = {shlex.split(c)[1] for page, k in TRANSCRIPTS for c, _ in blocks(page)[k][2]}
    assert {"--help", "rubric", "label", "agreement", "calibrate", "rate"} <= commands


@pytest.mark.parametrize("page, k", TRANSCRIPTS, ids=[f"{p.name}-{k}" for p, k in TRANSCRIPTS])
def test_transcript_is_what_the_program_prints(page, k, tmp_path):
    start, end, steps = blocks(page)[k]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    printed = [(command, run(command, tmp_path)) for command, _ in steps]
    if os.environ.get("RLAIF_WRITE_TRANSCRIPTS"):
        text = page.read_text().splitlines()
        text[start:end] = [out for command, lines in printed for out in (f"$ {command}", *lines)]
        page.write_text("\n".join(text) + "\n")
        return
    for (command, expected), (_, got) in zip(steps, printed):
        assert masked(got) == masked(expected), (f"{page.name}:{start + 1}: `{command}` prints otherwise now; regenerate with "
                                                 f"RLAIF_WRITE_TRANSCRIPTS=1 pytest tests/test_transcripts.py\n" + "\n".join(got))
