"""The repository stands on its own: nothing a user runs reaches a path outside the clone."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["README.md", "docs", "Makefile", ".ci", "tests", "bench", "examples", "prompts", "judges", "rlaif"]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".j2", ".jsonl", ".json", ".txt", ""}

# `../x` as a path (not the `...` of prose), `Path(__file__)...parent.parent...` chains, and
# absolute paths into the machine this was built on.
RELATIVE_UP = re.compile(r"(?<![.\w])\.\./")
PARENT_CHAIN = re.compile(r"__file__\)(?:\.resolve\(\))?((?:\.parent)+)")
ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|root|home)/")


def checked_files() -> list[Path]:
    files = []
    for name in CHECKED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return [p for p in files if p != Path(__file__).resolve()]  # this file spells out what it looks for


def outside_references(name: str, text: str) -> list[str]:
    """Every line of file `name` (relative to the root) that points outside the repository."""
    depth = len(Path(name).parts) - 1  # folders between the root and the file
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}: {line.strip()}"
        if RELATIVE_UP.search(line) or ABSOLUTE.search(line):
            found.append(where)
        for chain in PARENT_CHAIN.findall(line):
            if chain.count(".parent") > depth + 1:  # one .parent is the file's own folder
                found.append(where)
    return found


def test_the_checker_finds_what_it_must():
    text = ('DATA = "../sibling/data/x.gz"\nP = Path(__file__).resolve().parent.parent.parent / "sibling"\n'
            'ROOT = Path(__file__).parent.parent\nsee /work/sibling\n')
    assert [ref.split(":")[1] for ref in outside_references("tests/probe.py", text)] == ["1", "2", "4"]
    assert outside_references("probe.py", "ROOT = Path(__file__).parent.parent\n")  # from the root, .parent.parent is outside
    assert not outside_references("README.md", "Ellipses... and ./local/paths are fine\n")


def test_nothing_reaches_outside_the_repository():
    found = [ref for path in checked_files() for ref in outside_references(str(path.relative_to(ROOT)), path.read_text(errors="replace"))]
    assert not found, "these reach outside the repository, which a user's clone does not have:\n" + "\n".join(found)
