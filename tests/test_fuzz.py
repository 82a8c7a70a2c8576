"""The readers of user files, fuzzed: random bytes, random JSON and mutated valid rows go to the
input reader, the judge, train and experiment config readers and the rubric loader. Each either
returns what it promises or raises the toolkit's `UserError`: never another exception, never a
traceback for the user. Fixed seed (derandomized), a budget well under a minute."""

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlaif.errors import UserError
from rlaif.inputs import Example, iter_examples
from rlaif.judging.engine import JudgeSpec
from rlaif.judging.rubric import load_rubric
from rlaif.trainers.config import TrainConfig, read_config_file
from rlaif.workflows.experiment import read_experiment

FUZZ = settings(derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
SLOW_FUZZ = settings(derandomize=True, deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)
VALID = {"id": "r1", "prompt": "q", "chosen": "a", "rejected": "b", "responses": ["a", "b"], "ai_preference": 0.7, "human_preference": 1.0}
mutated_rows = st.builds(lambda keep, changes: {**{k: v for k, v in VALID.items() if k in keep}, **changes},
                         st.sets(st.sampled_from(sorted(VALID))), st.dictionaries(st.sampled_from(sorted(VALID)), json_values, max_size=3))


def read_all(path: Path) -> list:
    """Every row of a file as the labeler reads it; only valid rows or a UserError may come out."""
    try:
        rows = list(iter_examples(path))
    except UserError:
        return []
    assert all(isinstance(r, Example) for r in rows)
    return rows


def scratch(name: str, data: bytes) -> Path:
    path = Path(tempfile.mkdtemp()) / name
    path.write_bytes(data)
    return path


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["in.jsonl", "in.json", "in.jsonl.gz", "in.json.gz"]))
def test_random_bytes_as_input(data, name):
    read_all(scratch(name, data))


@SLOW_FUZZ
@given(st.binary(max_size=300), st.sampled_from(["in.csv", "in.parquet"]))
def test_random_bytes_as_tables(data, name):
    read_all(scratch(name, data))


@FUZZ
@given(st.lists(json_values | mutated_rows, max_size=5))
def test_random_json_and_mutated_rows_as_jsonl(rows):
    read_all(scratch("in.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()))


@FUZZ
@given(json_values | mutated_rows)
def test_random_json_as_a_json_file(value):
    read_all(scratch("in.json", json.dumps(value).encode()))


toml_values = st.one_of(st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), st.booleans(), st.text(max_size=8),
                        st.lists(st.integers(0, 9), max_size=3))


def toml_text(table: dict) -> str:
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    plain = [f"{json.dumps(k)} = {value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    sections = [f"[{json.dumps(k)}]\n" + "\n".join(f"{json.dumps(a)} = {value(b)}" for a, b in v.items())
                for k, v in table.items() if isinstance(v, dict)]
    return "\n".join(plain + sections) + "\n"


JUDGE_KEYS = ["backend", "model", "options", "other"]
OPTION_KEYS = ["batch_size", "temperature", "verdict", "concurrency", "max_new_tokens", "timeout", "base_url", "api_key_env", "unknown"]
judge_tables = st.dictionaries(st.sampled_from(JUDGE_KEYS),
                               toml_values | st.sampled_from(["local", "openai", "anthropic", "reward_model", "llama_cpp"])
                               | st.dictionaries(st.sampled_from(OPTION_KEYS), toml_values, max_size=3), max_size=4)


@FUZZ
@given(judge_tables | st.binary(max_size=100))
def test_random_judge_configs(table):
    path = scratch("judge.toml", table if isinstance(table, bytes) else toml_text(table).encode())
    rubric = load_rubric("quality")
    try:
        JudgeSpec.build(str(path), rubric)
    except UserError:
        pass


TRAIN_KEYS = ["method", "data", "output", "lr", "batch_size", "epochs", "beta", "loss", "eval_split", "lora_r",
              "train_layers", "unknown", "max_steps"]


@FUZZ
@given(st.dictionaries(st.sampled_from(TRAIN_KEYS), toml_values | st.sampled_from(["dpo", "rm", "ppo", "sigmoid"]), max_size=6)
       | st.binary(max_size=100))
def test_random_train_configs(table):
    path = scratch("train.toml", table if isinstance(table, bytes) else toml_text(table).encode())
    try:
        TrainConfig(**{"method": "dpo", "data": "d.jsonl", "output": "o", **read_config_file(path)})
    except UserError:
        pass


EXPERIMENT_KEYS = ["output", "model", "seed", "data", "label", "train", "gold_rm", "compare", "nonsense"]
DATA_KEYS = ["source", "train", "gold", "eval", "other"]


@FUZZ
@given(st.dictionaries(st.sampled_from(EXPERIMENT_KEYS),
                       toml_values | st.dictionaries(st.sampled_from(DATA_KEYS + TRAIN_KEYS), toml_values, max_size=4), max_size=5)
       | st.binary(max_size=100))
def test_random_experiment_files(table):
    path = scratch("exp.toml", table if isinstance(table, bytes) else toml_text(table).encode())
    try:
        read_experiment(path)
    except UserError:
        pass


template_parts = st.sampled_from(["{{ prompt }}", "{{ response_a }}", "{{ response_b }}", "{{ response }}", "{% if cot %}",
                                  "{% endif %}", "{{", "}}", "{% set labels = ['A', 'B'] %}", "{% extends '_layout.j2' %}",
                                  "{{ x.__class__ }}", "{% for x in y %}", "text", "\n"])


@FUZZ
@given(st.lists(template_parts, max_size=8).map("".join) | st.text(max_size=60))
def test_random_rubric_templates(text):
    path = scratch("mine.j2", text.encode())
    try:
        load_rubric(str(path))
    except UserError:
        pass
