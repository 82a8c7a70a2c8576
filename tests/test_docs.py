"""The documentation tells the truth about the command line: every `rlaif ...` command in the
README and in docs/ parses against the real CLI, a few quick ones run for real, the Python
imports the docs show exist, and every relative link points at a file that exists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of each fenced code block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language, body, start = opening.group(1), opening.group(2).lower(), [], i + 2
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((language, start, body))
        i += 1
    return blocks


def shell_commands(language: str, start: int, body: list[str]) -> list[tuple[int, str]]:
    """(line number, command) of each command in a shell block, backslash continuations joined.
    In a console block only the lines after a `$ ` prompt are commands (the rest is output)."""
    out, current, first = [], None, 0
    for number, line in enumerate(body, start):
        if current is None:
            if language == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            elif line.startswith("$ "):
                line = line[2:]
            current, first = "", number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        out.append((first, current + stripped))
        current = None
    if current:
        out.append((first, current))
    return out


def rlaif_args(command: str) -> list[str] | None:
    """The arguments after `rlaif` of a command that runs rlaif (after any VAR=value), or None."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError as e:
        raise AssertionError(f"cannot split {command!r}: {e}") from None
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words or Path(words[0]).name != "rlaif":
        return None
    args = words[1:]
    for i, word in enumerate(args):  # a command chained after this one is not rlaif's
        if word in ("|", "||", "&&", ";", "&"):
            return args[:i]
    return args


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for language, start, body in code_blocks(page.read_text()):
            if language not in SHELL_BLOCKS:
                continue
            for number, command in shell_commands(language, start, body):
                args = rlaif_args(command)
                if args is not None:
                    found.append((f"{page.relative_to(ROOT)}:{number}: {command.strip()}", args))
    return found


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) > 30
    assert {args[0] for _, args in COMMANDS if args} >= {"label", "train", "compare", "iterate", "revise", "rate",
                                                         "experiment", "rubric", "agreement"}


def test_the_collector_reads_blocks_as_a_shell_would():
    text = ("```bash\nOMP_NUM_THREADS=1 rlaif train --method rm \\\n  --lr 3e-3   # a comment\nmake demo\n```\n"
            "```console\n$ rlaif agreement DIR\nrlaif is not a command here\n```\n")
    commands = [(n, c) for language, start, body in code_blocks(text) if language in SHELL_BLOCKS
                for n, c in shell_commands(language, start, body)]
    assert [rlaif_args(c) for _, c in commands] == [["train", "--method", "rm", "--lr", "3e-3"], None, ["agreement", "DIR"]]
    assert [n for n, _ in commands] == [2, 4, 7]


@pytest.fixture
def paths_need_not_exist(monkeypatch):
    """Placeholders (DIR, outputs a run would write) are fine as values: parse them without
    checking that the paths exist; option names, choices and types are still checked."""
    monkeypatch.setattr(click.Path, "convert", lambda self, value, param, ctx: value)


@pytest.mark.parametrize("where, args", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, args, paths_need_not_exist):
    from rlaif.cli import main

    try:
        ctx = main.make_context("rlaif", list(args))
        assert args, "no subcommand"
        cmd = main.get_command(ctx, args[0])
        assert cmd is not None, f"no such command {args[0]!r}"
        cmd.make_context(args[0], list(args[1:]), parent=ctx)
    except click.exceptions.Exit as e:  # --help, --version
        assert e.exit_code == 0, where
    except click.ClickException as e:
        pytest.fail(f"{where}\n  {type(e).__name__}: {e.format_message()}")


def test_a_wrong_option_fails_to_parse(paths_need_not_exist):
    from rlaif.cli import main

    ctx = main.make_context("rlaif", ["label"])
    with pytest.raises(click.NoSuchOption):
        main.get_command(ctx, "label").make_context("label", ["--input", "x", "--no-such-option"], parent=ctx)
    with pytest.raises(click.BadParameter):
        main.get_command(ctx, "label").make_context("label", ["--input", "x", "--debias", "sideways"], parent=ctx)


def documented(args: list[str]) -> bool:
    return any(found == args for _, found in COMMANDS)


def run_rlaif(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env, check=False)


@pytest.mark.parametrize("args, expected", [
    (["--help"], ["label", "train", "compare", "iterate", "revise", "rate", "experiment", "rubric", "agreement"]),
    (["rubric", "quality"], ["Preferred Response="]),
    (["rubric", "quality", "--mode", "pointwise"], ["Rating="]),
])
def test_quick_documented_commands_run(args, expected):
    assert documented(args), f"`rlaif {' '.join(args)}` is no longer in the docs"
    result = run_rlaif(*args)
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout, result.stdout


def snapshot(folder: Path) -> dict[str, float] | None:
    return None if not folder.exists() else {str(p): p.stat().st_mtime for p in folder.rglob("*")}


def test_the_documented_dry_run_runs_and_writes_nothing():
    args = ["label", "--input", "examples/demo.jsonl", "--pairs", "all", "--dry-run"]
    assert documented(args)
    before = snapshot(ROOT / "outputs" / "demo")
    result = run_rlaif(*args)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d+ pairs: \d+ judge calls to make, \d+ already cached$", result.stdout, re.MULTILINE), result.stdout
    assert "estimated tokens" in result.stdout
    assert snapshot(ROOT / "outputs" / "demo") == before


def python_imports() -> list[tuple[str, str, list[str]]]:
    """(where, module, names) of every `from rlaif... import ...` in the docs' Python blocks."""
    found = []
    for page in PAGES:
        for language, start, body in code_blocks(page.read_text()):
            if language != "python":
                continue
            for number, line in enumerate(body, start):
                if m := re.match(r"from (rlaif[\w.]*) import (.+)$", line.strip()):
                    found.append((f"{page.relative_to(ROOT)}:{number}", m.group(1), [n.strip() for n in m.group(2).split(",")]))
    return found


@pytest.mark.parametrize("where, module, names", python_imports(), ids=[w for w, _, _ in python_imports()])
def test_documented_python_imports_exist(where, module, names):
    import importlib

    imported = importlib.import_module(module)
    missing = [n for n in names if not hasattr(imported, n)]
    assert not missing, f"{where}: {module} has no {', '.join(missing)}"


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def without_code(text: str) -> str:
    """The text with fenced code blocks and inline code left out (links there are not links)."""
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    heading = re.sub(r"`([^`]*)`", r"\1", heading.strip()).lower()
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^(`{3,}|~{3,}).*?^\1", "", page.read_text(), flags=re.MULTILINE | re.DOTALL).splitlines():
        if m := re.match(r"#{1,6}\s+(.+?)\s*#*$", line):
            base = anchor(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_anchor_follows_github():
    assert anchor("PPO-ptx: `--ptx-coef γ --ptx-data PATH`") == "ppo-ptx---ptx-coef-γ---ptx-data-path"
    assert anchor("DPO on the demo's AI labels") == "dpo-on-the-demos-ai-labels"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_point_at_files_that_exist(page):
    broken = []
    for target in LINK.findall(without_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{fragment} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_every_page_links_back_to_the_index():
    index = ROOT / "docs" / "README.md"
    listed = set(LINK.findall(index.read_text()))
    for page in PAGES:
        if page.parent.name != "docs" or page == index:
            continue
        assert "](README.md)" in page.read_text(), f"{page.name} does not link to the documentation index"
        assert page.name in listed, f"the documentation index does not list {page.name}"


def test_the_readme_fits_on_a_few_screens():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
