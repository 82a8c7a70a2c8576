import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from rlaif import judge as judge_module
from rlaif.judge import Judge, JudgeRequest, Verdict

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HH = Path(__file__).resolve().parent.parent / "examples" / "hh-harmless.jsonl.gz"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class ScriptedJudge(Judge):
    """A test double with a known answer: prefers the response containing 'GOOD', and adds
    a fixed bias towards whatever is shown first."""

    @dataclass
    class Options:
        bias: float = 0.0

    calls: ClassVar[list[str]] = []  # every prompt any instance was asked, in order

    def judge(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        for i, r in enumerate(requests):
            ScriptedJudge.calls.append(r.prompt)
            first = r.prompt.split("Response 1:")[1].split("Response 2:")[0]
            p = 0.8 if "GOOD" in first else 0.2
            p = min(0.99, p + self.options.bias)
            if "UNREADABLE" in r.prompt:
                on_result(i, Verdict(p_first=None, text="I cannot decide", soft=False, error="no verdict in the reply"))
            else:
                on_result(i, Verdict(p_first=p, prompt_tokens=10))


@pytest.fixture
def scripted_judge(tmp_path, monkeypatch):
    """Path of a judge config for `ScriptedJudge` with the given first-position bias."""
    monkeypatch.setitem(judge_module.BACKENDS, "scripted", "tests.conftest:ScriptedJudge")
    ScriptedJudge.calls = []

    def make(bias: float = 0.0) -> str:
        path = tmp_path / f"scripted-{bias}.toml"
        path.write_text(f'backend = "scripted"\nmodel = "none"\n[options]\nbias = {bias}\n')
        return str(path)

    return make
