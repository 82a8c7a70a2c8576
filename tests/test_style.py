"""The code keeps one style: ruff's lint rules (the long-line check at 110 characters among them)
and ruff's formatter, as pyproject.toml sets them, over the package, the tests and the benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = ["rlaif", "tests", "bench"]


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_the_code_passes_ruff(check):
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *check, *CODE], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
