"""Judging and generating through llama.cpp's real OpenAI-compatible server (llama-cpp-python's),
serving the embedded model's own GGUF file, beside llama.cpp in this process on the same file."""

import json
import sqlite3
import subprocess
import sys
import tomllib

import pytest

from rlaif.judging.configs import resolve_judge_path
from rlaif.judging.engine import UnreadableJudge
from rlaif.labeling.run import LabelConfig, label
from tests.conftest import HH, write_jsonl
from tests.llama_server import llama_server

HH_ROWS = f"{HH}?rows=0:4"


@pytest.fixture(scope="session")
def llama_server_url(tmp_path_factory):
    with llama_server(tmp_path_factory.mktemp("llama-server") / "server.log") as url:
        yield url


@pytest.fixture
def server_judge(tmp_path, llama_server_url):
    """The built-in `llama-cpp-server` judge config pointed at the test's server, options changed as given."""

    def make(**options) -> str:
        config = tomllib.loads(resolve_judge_path("llama-cpp-server").read_text())
        config["options"].update(base_url=llama_server_url, **options)
        lines = [f'backend = "{config["backend"]}"', f'model = "{config["model"]}"', "[options]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in config["options"].items()]
        path = tmp_path / f"server-{len(list(tmp_path.glob('server-*.toml')))}.toml"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    return make


def _label(tmp_path, name: str, judge: str, data: str = HH_ROWS, **kw):
    return label(LabelConfig(data, str(tmp_path / name), judge=judge, progress=False, **kw))


def _answers(result) -> dict[tuple[str, str], float]:
    """Each call's answer by (pair, response shown first or rated): p_first, or the score."""
    found = {}
    for row in result.rows:
        for item in row.get("orders", row.get("scores", [])):
            key = (row["id"], item.get("first", item.get("response")))
            found[key] = item.get("p_first", item.get("score"))
            assert item["soft"], row["id"]
    return found


@pytest.mark.parametrize("mode", ["pairwise", "pointwise"])
def test_prefilled_verdicts_through_the_server_equal_llama_cpp_in_process(tmp_path, server_judge, mode):
    served = _label(tmp_path, "served", server_judge(), mode=mode)
    local = _label(tmp_path, "in-process", "llama-cpp", mode=mode)
    assert served.manifest["verdicts"]["unreadable"] == 0 and served.manifest["counts"]["labeled"] == 4
    assert served.manifest["verdicts"]["soft"] == served.manifest["judge_calls"]["total"] == 8
    a, b = _answers(served), _answers(local)
    assert a.keys() == b.keys() and len(a) == 8
    # Pointwise answers are expected ratings on 1-5: probabilities within 1e-3 move them by at most 4e-3.
    tolerance = 1e-3 if mode == "pairwise" else 4e-3
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=tolerance), key


def test_chain_of_thought_with_a_prefilled_verdict_through_the_server(tmp_path, server_judge):
    result = _label(tmp_path, "cot", server_judge(max_tokens_cot=24), data=f"{HH}?rows=0:1", cot=True)
    assert result.manifest["verdicts"]["unreadable"] == 0 and len(result.rows) == 1
    for order in result.rows[0]["orders"]:
        assert order["soft"] and order["text"] and "Preferred Response=" not in order["text"]


def test_constrained_verdicts_through_the_server(tmp_path, server_judge):
    result = _label(tmp_path, "constrained", server_judge(verdict="constrained", structured_output="json_object", max_tokens=24))
    m = result.manifest
    assert m["verdicts"]["unreadable"] == 0 and m["counts"]["labeled"] == 4
    assert m["verdicts"]["soft"] == 8  # log-probabilities at the label's token inside the JSON


def test_text_verdicts_of_a_small_model_stop_the_run_early_with_advice(tmp_path, server_judge):
    judge = server_judge(verdict="text")
    cmd = [sys.executable, "-m", "rlaif.cli", "label", "--input", f"{HH}?rows=0:20", "--output", str(tmp_path / "text"),
           "--judge", judge, "--quiet"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: judge ") and "no readable verdict" in message and "'constrained' or 'prefilled'" in message
    assert cached_answers(tmp_path / "text") == 10  # of 40 calls: the run stopped after the first ten
    with pytest.raises(UnreadableJudge):  # the same through the Python API: its cached answers stop it before any call
        _label(tmp_path, "text", judge, data=f"{HH}?rows=0:20")
    assert cached_answers(tmp_path / "text") == 10


def cached_answers(out) -> int:
    with sqlite3.connect(out / "cache.sqlite") as db:
        return db.execute("select count(*) from answers").fetchone()[0]


def test_prompt_only_rows_generated_and_judged_through_the_server(tmp_path, server_judge):
    rows = [{"id": "p0", "prompt": "Give me a tip for staying focused."}, {"id": "p1", "prompt": "What is a good name for a cat?"}]
    data = str(write_jsonl(tmp_path / "prompts.jsonl", rows))
    judge = server_judge()
    result = _label(tmp_path, "generated", judge, data=data, generator=judge, num_responses=2, max_new_tokens=24)
    assert result.manifest["counts"]["labeled"] == 2 and result.manifest["verdicts"]["unreadable"] == 0
    for row in result.rows:  # two samples per prompt although the server returns one choice a call
        assert row["chosen"] and row["rejected"] and row["chosen"] != row["rejected"]
        assert all(order["soft"] for order in row["orders"])


def test_the_embedded_tokenizer_reads_the_tokens_llama_cpp_reads():
    from rlaif.judging.backends.llama_cpp_local import LlamaCppJudge
    from rlaif.judging.base import JudgeConfig

    judge = LlamaCppJudge(JudgeConfig("llama-cpp", "llama_cpp", "embedded", {}))
    try:
        for text in ("Some ideas, mostly for fun.\n\n1. Draw a map\n\n2. Make 12 cards",
                     "<|im_start|>user\nIn 2024, 3.5 of 10 said 'yes'.<|im_end|>\n"):
            assert judge.tokenizer(text, add_special_tokens=False)["input_ids"] == judge.tokenize(text), text
    finally:
        judge.close()
