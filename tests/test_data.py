import gzip
import json
from pathlib import Path

import pytest

from rlaif.errors import InputError
from rlaif.inputs import load_examples, make_pairs, split_transcript
from tests.conftest import HH, write_jsonl

PAIR = {"prompt": "Q?", "responses": ["a", "b", "c"]}


def test_responses_form_makes_all_pairs(tmp_path):
    examples = load_examples(write_jsonl(tmp_path / "d.jsonl", [PAIR])).examples
    pairs, skipped = make_pairs(examples)
    assert [(p.a, p.b) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert all(p.human is None for p in pairs)
    assert skipped == {"empty_response": 0, "identical_responses": 0}


def test_human_pair_is_randomly_oriented_but_keeps_the_human_choice(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"good{i}", "rejected": f"bad{i}"} for i in range(40)]
    pairs, _ = make_pairs(load_examples(write_jsonl(tmp_path / "d.jsonl", rows)).examples, seed=1)
    a_is_chosen = [p.a.startswith("good") for p in pairs]
    assert 5 < sum(a_is_chosen) < 35  # both orientations occur
    for p in pairs:
        assert p.human == (1.0 if p.a.startswith("good") else 0.0)
    again, _ = make_pairs(load_examples(tmp_path / "d.jsonl").examples, seed=1)
    assert [(p.a, p.b) for p in again] == [(p.a, p.b) for p in pairs]


def test_hh_transcripts_split_at_last_assistant_turn():
    with gzip.open(HH, "rt") as fh:
        record = json.loads(fh.readline())
    messages, reply = split_transcript(record["chosen"])
    assert messages[0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
    humans = record["chosen"].count("\n\nHuman: ")
    assert [m["role"] for m in messages] == ["user", "assistant"] * (humans - 1) + ["user"]
    assert record["chosen"].endswith(reply) and "Human:" not in reply and reply
    examples = load_examples(HH, limit=5).examples
    assert len(examples) == 5 and examples[0].prompt == messages and examples[0].human_best == 0


def test_prompt_only_and_chat_prompts(tmp_path):
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "help?"}]
    rows = [{"prompt": "Write a poem."}, {"prompt": chat, "responses": ["x", "y"]}]
    examples = load_examples(write_jsonl(tmp_path / "d.jsonl", rows)).examples
    assert examples[0].responses == [] and examples[1].prompt == chat


@pytest.mark.parametrize("fmt", ["jsonl.gz", "json", "csv", "parquet", "dataset"])
def test_file_formats(tmp_path, fmt):
    import datasets

    rows = [{"prompt": "q1", "chosen": "a", "rejected": "b"}, {"prompt": "q2", "chosen": "c", "rejected": "d"}]
    ds = datasets.Dataset.from_list(rows)
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl.gz":
        with gzip.open(path, "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        ds.to_csv(str(path), index=False)
    elif fmt == "parquet":
        ds.to_parquet(str(path))
    else:
        ds.save_to_disk(str(path))
    examples = load_examples(path).examples
    assert [(e.prompt, e.responses, e.human_best) for e in examples] == [("q1", ["a", "b"], 0), ("q2", ["c", "d"], 0)]


@pytest.mark.parametrize(
    "line, field, message",
    [
        ('{"prompt": "q", "responses": ["a"]}', "responses", "two or more"),
        ('{"prompt": "q", "responses": 7}', "responses", "list of strings"),
        ('{"prompt": "q", "chosen": "a"}', "rejected", "missing"),
        ('{"prompt": 3, "chosen": "a", "rejected": "b"}', "prompt", "string or a non-empty list"),
        ('{"prompt": [{"role": "robot", "content": "x"}], "responses": ["a", "b"]}', "prompt", "role 'robot'"),
        ('{"prompt": "   ", "responses": ["a", "b"]}', "prompt", "empty"),
        ('{"chosen": "plain text", "rejected": "b"}', "chosen", "not a transcript"),
        ('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: x", "rejected": "\\n\\nHuman: b\\n\\nAssistant: y"}', "rejected", "differ"),
        ('{"responses": ["a", "b"]}', "prompt", "missing"),
        ('{"text": "x"}', None, "no usable fields"),
        ("[1, 2]", None, "expected an object"),
        ('{"prompt": "q", "responses": ["a", "b"]', None, "not valid JSON"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, line, field, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PAIR) + "\n\n" + line + "\n")
    with pytest.raises(InputError) as err:
        load_examples(path)
    assert err.value.file == str(path) and err.value.line == 3 and err.value.field == field
    assert message in str(err.value) and str(err.value).startswith(f"{path}:3")


def test_skip_invalid_counts_and_reads_on(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PAIR) + "\n{oops\n" + '{"prompt": 1}\n' + json.dumps(PAIR) + "\n")
    result = load_examples(path, skip_invalid=True)
    assert len(result.examples) == 2
    assert [(f["line"], f["field"]) for f in result.failures] == [(2, None), (3, "prompt")]


def test_empty_and_identical_responses_are_skipped(tmp_path):
    rows = [{"prompt": "q", "responses": ["same", "same ", "", "other"]}]
    pairs, skipped = make_pairs(load_examples(write_jsonl(tmp_path / "d.jsonl", rows)).examples)
    assert [(p.a, p.b) for p in pairs] == [("same", "other"), ("same ", "other")]
    assert skipped == {"empty_response": 3, "identical_responses": 1}


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(InputError, match="unknown format"):
        load_examples(tmp_path / "d.txt")
    with pytest.raises(InputError, match="no such file"):
        load_examples(tmp_path / "nope.jsonl")


def hub_layout(root: Path, rows: list[dict]) -> Path:
    """A folder laid out as a data set repository on the hub (Anthropic/hh-rlhf's: a folder per
    subset, a gzipped JSONL file per split), which `datasets.load_dataset` reads the same way."""
    for subset, split, part in (("harmless-base", "train", rows[:3]), ("harmless-base", "test", rows[3:5]),
                                ("helpful-base", "test", rows[5:6])):
        (root / subset).mkdir(parents=True, exist_ok=True)
        with gzip.open(root / subset / f"{split}.jsonl.gz", "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in part)
    return root


def test_hub_data_set_by_name_data_dir_and_split(tmp_path):
    with gzip.open(HH, "rt") as fh:
        rows = [json.loads(next(fh)) for _ in range(6)]
    repo = hub_layout(tmp_path / "hh-rlhf", rows)
    spec = f"hf:{repo}?data_dir=harmless-base&split=test"
    examples = load_examples(spec).examples
    assert ([ex.responses for ex in examples]
            == [list(split_transcript(r["chosen"])[1:]) + [split_transcript(r["rejected"])[1]] for r in rows[3:5]])
    assert examples[0].id == "hh-rlhf-harmless-base-test-1" and examples[0].source == f"{spec}:1"
    assert len(load_examples(f"hf:{repo}?data_dir=harmless-base").examples) == 3  # the train split by default


def test_hub_data_set_errors_name_the_data_set_and_record(tmp_path):
    with gzip.open(HH, "rt") as fh:
        rows = [json.loads(next(fh)) for _ in range(6)]
    rows[4] = {"chosen": rows[4]["chosen"], "rejected": rows[0]["rejected"]}  # another conversation
    repo = hub_layout(tmp_path / "hh-rlhf", rows)
    spec = f"hf:{repo}?data_dir=harmless-base&split=test"
    with pytest.raises(InputError) as err:
        load_examples(spec)
    assert str(err.value) == f"{spec}:2: field 'rejected': the two transcripts differ before their last assistant turn"
    with pytest.raises(InputError, match="unknown option.*splt"):
        load_examples(f"hf:{repo}?splt=test")
    with pytest.raises(InputError, match=r"load_dataset.*split='validation'"):
        load_examples(f"hf:{repo}?data_dir=harmless-base&split=validation")


def test_hub_data_set_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from rlaif.cli import main

    with gzip.open(HH, "rt") as fh:
        rows = [json.loads(next(fh)) for _ in range(6)]
    spec = f"hf:{hub_layout(tmp_path / 'hh-rlhf', rows)}?data_dir=harmless-base&split=test"
    result = CliRunner().invoke(main, ["label", "--input", spec, "--dry-run"])
    assert result.exit_code == 0 and result.output.startswith("2 pairs: 4 judge calls to make"), result.output
    result = CliRunner().invoke(main, ["label", "--input", spec + "&splt=x", "--dry-run"])
    assert result.exit_code != 0 and "unknown option(s) splt" in result.output


def test_a_rows_selection_keeps_those_records_with_their_ids_and_lines(tmp_path):
    whole = load_examples(HH).examples
    part = load_examples(f"{HH}?rows=10:13").examples
    assert [ex.id for ex in part] == [ex.id for ex in whole[10:13]] and part[0].source.endswith(":11")
    assert [ex.id for ex in load_examples(f"{HH}?rows=998:").examples] == [ex.id for ex in whole[998:]]
    with gzip.open(HH, "rt") as fh:
        rows = [json.loads(next(fh)) for _ in range(6)]
    repo = hub_layout(tmp_path / "hh-rlhf", rows)
    hub = load_examples(f"hf:{repo}?data_dir=harmless-base&rows=1:2&split=train").examples
    assert [ex.id for ex in hub] == ["hh-rlhf-harmless-base-train-2"]
    with pytest.raises(InputError, match="rows=1-2: expected rows=START:END"):
        load_examples(f"{HH}?rows=1-2")
