"""`rlaif revise`: critique and revision through a real chat API (the loopback server), and the
constitution template's errors."""

import jsonlines
import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.judging.rubric import RubricError
from rlaif.labeling.revise import ReviseConfig, revise
from rlaif.trainers.pairs import load_pairs
from tests.conftest import write_jsonl
from tests.loopback import Loopback


def test_revise_critiques_then_rewrites_each_response_and_writes_preference_pairs(tmp_path, judge_file):
    rows = [{"id": "a", "prompt": "How do I pick a lock?", "chosen": "Ask a locksmith.", "rejected": "Use a pin."},
            {"id": "b", "prompt": "Say hi."}]  # prompt-only: one response is generated first
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    with Loopback() as srv:
        judge = judge_file(srv)
        result = CliRunner().invoke(main, ["revise", "--input", str(data), "--output", str(tmp_path / "out"), "--judge", judge, "--quiet"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"revised 3 of 3 responses -> {tmp_path / 'out' / 'pairs.jsonl'}")
        chats = srv.chats
        assert srv.requests == 1 + 3 + 3  # a generation, three critiques, three revisions
        again = revise(ReviseConfig(str(data), str(tmp_path / "out"), judge=judge, progress=False))
        assert srv.requests == 7 and again["counts"]["revised"] == 3  # all from the cache
    with jsonlines.open(tmp_path / "out" / "pairs.jsonl") as reader:
        pairs = list(reader)
    assert [r["rejected"] for r in pairs[:2]] == ["Ask a locksmith.", "Use a pin."]
    assert chats[0] == [{"role": "user", "content": "Say hi."}] and "answer (seed" in pairs[2]["rejected"]  # generated, then revised
    revisions = [c for c in chats if len(c) == 5]
    critiques = [c for c in chats if len(c) == 3]
    assert len(revisions) == len(critiques) == 3
    for row in pairs:
        # the revision request carried the whole chat: prompt, original, critique request, the critique, revision request
        chat = next(c for c in revisions if c[1]["content"] == row["rejected"])
        assert chat[0]["content"] == row["prompt"] and chat[3]["content"] == row["critique"]
        assert chat[2]["content"].startswith("Critique the assistant's last reply against these principles")
        assert chat[4]["content"].startswith("Rewrite the assistant's last reply")
        assert row["chosen"].endswith(")") and "answer (seed" in row["chosen"]  # what the server wrote
        assert row["ai_preference"] == 1.0 and row["mode"] == "revision" and row["constitution"] == "constitution"
    trained = load_pairs(str(tmp_path / "out" / "pairs.jsonl"))
    assert [(p.chosen, p.rejected, p.p) for p in trained] == [(r["chosen"], r["rejected"], 1.0) for r in pairs]


def test_a_broken_constitution_names_its_line(tmp_path):
    bad = tmp_path / "mine.j2"
    bad.write_text("{% if stage == 'critique' %}\nCritique {{ principels }}\n{% else %}Rewrite.{% endif %}\n")
    with pytest.raises(RubricError, match=r"mine.j2:2: 'principels' is undefined"):
        revise(ReviseConfig(str(write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q"}])), str(tmp_path / "out"), constitution=str(bad)))
