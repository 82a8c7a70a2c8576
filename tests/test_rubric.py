import json
import re

import pytest

from rlaif.judging.rubric import RubricError, load_rubric


@pytest.mark.parametrize("name", ["quality", "harmlessness", "summarization"])
def test_builtin_rubrics_render_both_forms(name):
    rubric = load_rubric(name)
    text = rubric.render("What is 2+2?", "It is 4.", "It is 5.")
    assert "What is 2+2?" in text and text.index("It is 4.") < text.index("It is 5.")
    assert "Preferred Response=1" in text and "explain" not in text
    cot = rubric.render("What is 2+2?", "It is 4.", "It is 5.", cot=True)
    assert "explain" in cot and cot != text
    assert len(rubric.sha256) == 64


def test_quality_rubric_names_its_criteria():
    text = load_rubric("quality").render("q", "a", "b")
    for criterion in ("Coherence", "Accuracy", "Coverage", "Overall quality"):
        assert criterion in text


def test_chat_prompt_renders_as_transcript():
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    text = load_rubric("harmlessness").render(chat, "a", "b")
    assert "Human: hi\n\nAssistant: hello\n\nHuman: bye" in text


def test_custom_template_with_own_labels(tmp_path):
    path = tmp_path / "mine.j2"
    path.write_text('{% set labels = ["A", "B"] %}{% set verdict_prefix = "Winner: " %}'
                    "Q: {{ prompt }} | {{ messages[0].content }} | A: {{ response_a }} | B: {{ response_b }}")
    rubric = load_rubric(str(path))
    assert rubric.labels == ("A", "B") and rubric.verdict_prefix == "Winner: "
    assert rubric.render("q", "x", "y").strip() == "Q: q | q | A: x | B: y"


def test_custom_template_extending_the_builtin_layout(tmp_path):
    path = tmp_path / "ext.j2"
    path.write_text('{% extends "_layout.j2" %}{% set labels = ["A", "B"] %}{% block criteria %}Be kind.{% endblock %}')
    rubric = load_rubric(str(path))
    text = rubric.render("q", "x", "y")
    assert "Be kind." in text and "Preferred Response=A" in text and rubric.labels == ("A", "B")


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.j2"
    path.write_text("line one\nline two {{ prompt \n")
    with pytest.raises(RubricError) as err:
        load_rubric(str(path))
    assert str(err.value).startswith(f"{path}:2:")


def test_undefined_variable_names_file_and_line(tmp_path):
    path = tmp_path / "undef.j2"
    path.write_text("{{ prompt }}\n{{ response_a }}\n{{ reponse_b }}\n")
    with pytest.raises(RubricError) as err:
        load_rubric(str(path))
    assert str(err.value).startswith(f"{path}:3:") and "reponse_b" in str(err.value)


def test_undefined_variable_only_in_cot_branch_is_caught_at_load(tmp_path):
    path = tmp_path / "cot.j2"
    path.write_text("{{ prompt }}{% if cot %}\n{{ rationale_hint }}{% endif %}")
    with pytest.raises(RubricError, match="rationale_hint"):
        load_rubric(str(path))


@pytest.mark.parametrize("expr", ["''.__class__.__mro__[1].__subclasses__()", "response_a.__class__.__init__.__globals__"])
def test_sandbox_blocks_python_internals(tmp_path, expr):
    path = tmp_path / "evil.j2"
    path.write_text("{{ " + expr + " }}")
    with pytest.raises(RubricError, match="unsafe|not safely|has no attribute"):
        load_rubric(str(path))


def test_unknown_rubric_lists_builtins():
    with pytest.raises(RubricError, match="quality"):
        load_rubric("no-such-rubric")


def test_reference_guided_rubric_sees_each_rows_reference(tmp_path, scripted_judge):
    from rlaif.errors import InputError
    from rlaif.labeling.run import LabelConfig, label
    from tests.conftest import ScriptedJudge, write_jsonl

    rubric = load_rubric("reference")
    assert rubric.needs_reference and ("The reference answer is correct and complete:\nParis."
                                       in rubric.render("Capital of France?", "Paris.", "Lyon.", reference="Paris."))
    rows = [{"id": "r0", "prompt": "Capital of France?", "chosen": "GOOD: Paris", "rejected": "Lyon", "reference": "Paris is the capital."}]
    result = label(LabelConfig(str(write_jsonl(tmp_path / "d.jsonl", rows)), str(tmp_path / "out"), rubric="reference",
                               judge=scripted_judge(0.0), progress=False))
    assert result.rows[0]["reference"] == "Paris is the capital."
    assert all("Paris is the capital." in prompt for prompt in ScriptedJudge.calls)  # both orders saw it
    without = write_jsonl(tmp_path / "no-ref.jsonl", [{"id": "r0", "prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(InputError, match=r"no-ref.jsonl:1: field 'reference': missing: rubric reference grades against a reference answer"):
        label(LabelConfig(str(without), str(tmp_path / "out2"), rubric="reference", judge=scripted_judge(0.0), progress=False))
    with pytest.raises(InputError, match="field 'reference': expected a string"):
        label(LabelConfig(str(write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "reference": 3}])), str(tmp_path / "out3"),
                          rubric="reference", judge=scripted_judge(0.0), progress=False))


def test_a_judge_config_names_the_rubric_and_mode_a_run_uses_unless_told(tiny, tmp_path):
    from rlaif.judging.base import JudgeConfigError
    from rlaif.labeling.run import LabelConfig, label

    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "Is 3 a number?", "chosen": "Yes, it is.", "rejected": "No."}\n')
    judge = tmp_path / "judge.toml"
    judge.write_text(f'backend = "local"\nmodel = "{tiny}"\nrubric = "harmlessness"\nmode = "pointwise"\n')
    manifest = lambda out: json.loads((out / "manifest.json").read_text())
    label(LabelConfig(input=str(data), judge=str(judge), output=str(tmp_path / "own")))
    m = manifest(tmp_path / "own")
    assert (m["rubric"]["name"], m["mode"], m["judge_calls"]["total"]) == ("harmlessness", "pointwise", 2)  # one call per response
    label(LabelConfig(input=str(data), judge=str(judge), rubric="quality", mode="pairwise", output=str(tmp_path / "told")))
    m = manifest(tmp_path / "told")
    assert (m["rubric"]["name"], m["mode"], m["judge_calls"]["total"]) == ("quality", "pairwise", 2)  # one call per order

    for text, message in [('mode = "listwise"', "key 'mode': expected one of pairwise, pointwise, got 'listwise'"),
                          ('rubrik = "harmlessness"', "key 'rubrik': unknown key; did you mean 'rubric'?"),
                          ('rubric = ""', "key 'rubric': expected a built-in rubric name or a template path")]:
        judge.write_text(f'backend = "local"\nmodel = "{tiny}"\n{text}\n')
        with pytest.raises(JudgeConfigError, match=re.escape(message)):
            label(LabelConfig(input=str(data), judge=str(judge), output=str(tmp_path / "bad")))
