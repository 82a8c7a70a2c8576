"""The package's shape: imports run one way, from the command line down to the plumbing, and no
module grows past what a reader takes in at once without saying why."""

import ast
from pathlib import Path

import pytest

import rlaif

PACKAGE = Path(rlaif.__file__).parent
# Each layer may import the layers below it. Packages in one layer are siblings: neither imports the other.
LAYERS = [
    ["rlaif.cli"],
    ["rlaif.workflows"],
    ["rlaif.evaluate"],
    ["rlaif.trainers", "rlaif.labeling", "rlaif.serving"],
    ["rlaif.judging"],
    ["rlaif.models"],
    ["rlaif.inputs"],
    ["rlaif.settings", "rlaif.storage", "rlaif.stats"],
    ["rlaif.errors"],
]
MAX_LINES = 400


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def layer_of(module: str) -> tuple[int, str] | None:
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return rank, package
    return None


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every rlaif import in a file, at any depth (lazy imports count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, m) for line, m in out if m == "rlaif" or m.startswith("rlaif.")]


def test_every_module_has_a_layer():
    assert [m for m, _ in modules() if m != "rlaif" and layer_of(m) is None] == []


def test_imports_run_one_way():
    wrong = []
    for module, path in modules():
        if module == "rlaif":  # the public API re-exports from every layer
            continue
        rank, package = layer_of(module)
        for line, target in imported(path):
            to = layer_of(target)
            if to is None:
                wrong.append(f"{path.name}:{line} imports {target}, the package's public face (import the module that defines it)")
            elif to[0] < rank or (to[0] == rank and to[1] != package):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({package}) imports {target} ({to[1]})")
    assert wrong == []


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rlaif.evaluate.compare import compare\n")
    assert imported(bad) == [(2, "rlaif.evaluate.compare")]
    assert layer_of("rlaif.evaluate.compare")[0] < layer_of("rlaif.judging.engine")[0]


def test_no_module_too_long_without_a_reason():
    """A module past MAX_LINES says why at its top (a line starting `Longer than`)."""
    long = [f"{path.relative_to(PACKAGE.parent)}: {n} lines" for _, path in modules()
            if (n := len(path.read_text().splitlines())) > MAX_LINES and "Longer than" not in "\n".join(path.read_text().splitlines()[:20])]
    assert long == []


@pytest.mark.parametrize("name", rlaif.__all__)
def test_public_api(name):
    """Every public name is importable from `rlaif` itself."""
    assert getattr(rlaif, name) is not None


def test_public_api_runs_a_dry_run(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "q", "responses": ["a", "b"]}\n')
    result = rlaif.label(rlaif.LabelConfig(input=str(data), output=str(tmp_path / "out"), dry_run=True, progress=False))
    assert result.estimate["pairs"] == 1 and result.estimate["calls"] == 2
    assert not (tmp_path / "out").exists()
