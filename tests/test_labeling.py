import json

import datasets
import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.evaluate.agreement import agreement
from rlaif.labeling.run import LabelConfig, label
from rlaif.stats import cohen_kappa
from tests.conftest import HH, ScriptedJudge, write_jsonl


def human_rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"question {i}", "chosen": f"GOOD answer {i}", "rejected": f"poor answer {i}"} for i in range(n)]


def test_debiasing_removes_a_strong_position_bias(tmp_path, scripted_judge):
    data = write_jsonl(tmp_path / "d.jsonl", human_rows(40))
    # Bias 0.6: the judge says "first" in every call, whatever it is shown.
    biased = label(LabelConfig(str(data), str(tmp_path / "both"), judge=scripted_judge(0.6), progress=False))
    assert biased.manifest["first_position_rate"]["raw"] == 1.0
    assert 0.3 < biased.manifest["first_position_rate"]["labels"] < 0.7
    # Under the bias, the content signal survives in both orders: every label agrees with the human.
    assert all(r["human_preference"] == 1.0 for r in biased.rows)
    assert all(r["consistent"] is False for r in biased.rows)

    one_order = label(LabelConfig(str(data), str(tmp_path / "none"), judge=scripted_judge(0.6), debias="none", progress=False))
    assert one_order.manifest["first_position_rate"]["labels"] == 1.0
    assert 0.3 < agreement(tmp_path / "none")["agreement"] < 0.7  # the bias, not the content, decides


def test_outputs_manifest_filters_and_failures(tmp_path, scripted_judge):
    rows = human_rows(6) + [{"id": "bad", "prompt": "UNREADABLE", "chosen": "x", "rejected": "y"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "out"
    result = label(LabelConfig(str(data), str(out), judge=scripted_judge(0.0), min_confidence=0.9, progress=False))
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["pairs"] == 7 and m["counts"]["failed"]["judge"] == 1
    assert m["counts"]["filtered"]["low_confidence"] == 6 and m["counts"]["labeled"] == 0
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {f["id"] for f in failures} == {"bad:0-1"} and failures[0]["text"] == "I cannot decide"
    assert len(m["rubric"]["sha256"]) == 64 and m["judge_calls"]["made"] == 14
    assert result.rows == []

    kept = label(LabelConfig(str(data), str(out), judge=scripted_judge(0.0), progress=False))
    assert len(kept.rows) == 6 and all(r["ai_preference"] == pytest.approx(0.8) for r in kept.rows)
    assert kept.manifest["judge_calls"] == {"per": "order", "total": 14, "made": 0, "cached": 14}


def test_rerun_asks_nothing_twice(tmp_path, scripted_judge):
    data = write_jsonl(tmp_path / "d.jsonl", human_rows(5))
    config = LabelConfig(str(data), str(tmp_path / "out"), judge=scripted_judge(0.1), progress=False)
    first = label(config)
    calls = len(ScriptedJudge.calls)
    second = label(config)
    assert len(ScriptedJudge.calls) == calls == 10
    assert first.rows == second.rows


def test_cli_reports_bad_input_by_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "q", "responses": ["a", "b"]}\n{"prompt": "q", "responses": "ab"}\n')
    result = CliRunner().invoke(main, ["label", "--input", str(path), "--output", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 1
    assert f"{path}:2: field 'responses': expected a list of strings" in result.output
    assert not (tmp_path / "o").exists()  # nothing was started


def test_cli_reports_bad_rubric(tmp_path):
    rubric = tmp_path / "r.j2"
    rubric.write_text("{% if %}")
    data = write_jsonl(tmp_path / "d.jsonl", human_rows(1))
    result = CliRunner().invoke(main, ["label", "--input", str(data), "--rubric", str(rubric), "--quiet"])
    assert result.exit_code == 1 and f"{rubric}:1:" in result.output


def test_cohen_kappa_by_hand():
    # 4 items: raters agree on 3. p_o = 0.75; marginals x: 2/4, y: 1/4 -> p_e = 0.5*0.25 + 0.5*0.75 = 0.5
    assert cohen_kappa([(True, True), (True, False), (False, False), (False, False)]) == pytest.approx(0.5)


@pytest.mark.slow
def test_real_labeling_run_with_the_embedded_judge(tmp_path):
    out = tmp_path / "hh"
    runner = CliRunner()
    result = runner.invoke(main, ["label", "--input", str(HH), "--limit", "4", "--output", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = datasets.load_dataset("json", data_files=str(out / "pairs.jsonl"), split="train")
    assert len(rows) == 4
    for row in rows:
        assert 0.5 <= row["ai_preference"] <= 1.0 and len(row["orders"]) == 2
        assert row["human_preference"] in (0.0, 1.0) and row["prompt"][0]["role"] == "user"
        assert all(0.0 < o["p_first"] < 1.0 for o in row["orders"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["judge"]["name"] == "embedded" and manifest["tokens"]["prompt"] > 1000
    report = runner.invoke(main, ["agreement", str(out)])
    assert report.exit_code == 0 and "first-position rate, raw judgments" in report.output
    assert json.loads((out / "agreement.json").read_text())["with_human_label"] == 4


@pytest.mark.slow
def test_embedded_judge_prefers_the_right_answer_when_debiased_in_cot_form(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is the capital of France?",
                                               "responses": ["Paris.", "Paris is the capital of France."]}])
    result = label(LabelConfig(str(data), str(tmp_path / "o"), cot=True, progress=False))
    (row,) = result.rows
    assert all(o["text"] for o in row["orders"])  # a rationale was generated for each order
    assert result.manifest["tokens"]["completion"] > 0


@pytest.mark.slow
def test_prompt_only_rows_are_generated_then_labeled(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Name a fruit."}])
    config = LabelConfig(str(data), str(tmp_path / "o"), num_responses=3, max_new_tokens=12, progress=False)
    first = label(config)
    # Three candidates are ranked; the pair written (or left out, unseparated) is the best against the worst.
    assert first.manifest["counts"]["pairs"] == 1 and first.manifest["ranking"]["rows"] == 1
    assert len((tmp_path / "o" / "rankings.jsonl").read_text().splitlines()) == 1
    again = label(config)
    assert again.rows == first.rows and again.manifest["judge_calls"]["made"] == 0


def test_baselines_lift_and_calibration_against_a_hand_count_and_the_data_set_card(tmp_path, scripted_judge):
    import yaml

    # Humans prefer the GOOD answer; it is the shorter one in three rows of four.
    rows = [{"id": f"r{i}", "prompt": f"question {i}", "chosen": f"GOOD answer {i}",
             "rejected": f"poor answer {i}, and at length"} for i in range(3)]
    rows.append({"id": "r3", "prompt": "question 3", "chosen": "GOOD answer 3, and at length", "rejected": "poor answer 3"})
    out = tmp_path / "out"
    result = label(LabelConfig(str(write_jsonl(tmp_path / "d.jsonl", rows)), str(out), judge=scripted_judge(0.0), progress=False))
    report = agreement(out)
    assert report["agreement"] == 1.0  # the scripted judge prefers GOOD, as the humans do
    first_is_human = sum(r["orders"][0]["first"] == "chosen" for r in result.rows) / 4
    assert report["baselines"] == {"always the longer response": {"agreement": 0.25}, "always the shorter response": {"agreement": 0.75},
                                   "always the one shown first": {"agreement": first_is_human}}
    # Best rule: shorter, at 75%. Paired differences 0, 0, 0, 1: mean 0.25, s = 0.5, interval 0.25 ± 1.96 · 0.5 / 2.
    lift = report["lift_over_best_baseline"]
    assert lift["baseline"] == "always the shorter response" and lift["difference"] == pytest.approx(0.25)
    assert (lift["low"] == pytest.approx(0.25 - 1.959964 * 0.25, abs=1e-5)
            and lift["high"] == pytest.approx(0.25 + 1.959964 * 0.25, abs=1e-5))
    confidence = [r["ai_preference"] for r in result.rows]
    assert report["calibration"]["ece"] == pytest.approx(1 - sum(confidence) / 4)  # one bin: |accuracy 1 − mean confidence|
    assert (out / "reliability.png").stat().st_size > 0

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"][0]["data_files"][0]["path"] == "pairs.jsonl" and {"dpo", "preference"} <= set(front["tags"])
    assert ("always the shorter response | 75.0%" in card and "+25.0 points" in card
            and f"rlaif label --input {tmp_path / 'd.jsonl'}" in card)
    loaded = datasets.load_dataset(str(out), split="train")
    assert loaded.num_rows == 4 and set(loaded.column_names) >= {"prompt", "chosen", "rejected", "ai_preference"}


def test_calibrate_fits_the_temperature_and_label_uses_it(tmp_path, scripted_judge):
    import math

    from rlaif.judging.configs import load_judge_config
    from rlaif.labeling.calibration import calibrate, fit_temperature, log_loss

    # The scripted judge says 0.8 for GOOD in both orders: ai_preference 0.8 on every pair. The
    # humans agree on 6 of 10, so the calibrated preference must come down to 0.6: σ(logit 0.8 / T) = 0.6.
    rows = [{"id": f"r{i}", "prompt": f"q{i}", **({"chosen": f"GOOD {i}", "rejected": f"poor {i}"} if i < 6
                                                  else {"chosen": f"poor {i}", "rejected": f"GOOD {i}"})}
            for i in range(10)]
    data = str(write_jsonl(tmp_path / "d.jsonl", rows))
    run = label(LabelConfig(data, str(tmp_path / "raw"), judge=scripted_judge(0.0), progress=False))
    assert all(r["ai_preference"] == pytest.approx(0.8) for r in run.rows)
    expected_t = math.log(0.8 / 0.2) / math.log(0.6 / 0.4)
    assert fit_temperature([0.8] * 10, [1] * 6 + [0] * 4) == pytest.approx(expected_t, rel=1e-3)
    grid = min((log_loss([1 / (1 + (0.2 / 0.8) ** (1 / t))] * 10, [1] * 6 + [0] * 4), t) for t in [0.5 + 0.01 * k for k in range(500)])[1]
    assert grid == pytest.approx(expected_t, abs=0.01)  # the same minimum by brute force

    report = calibrate(tmp_path / "raw", folds=2)
    assert report["temperature"] == pytest.approx(expected_t, rel=1e-3)
    assert report["ece_before"] == pytest.approx(0.2) and report["ece_after_cross_validated"] < report["ece_before"]
    config = load_judge_config(report["config"])
    assert config.calibration == pytest.approx(expected_t, rel=1e-3) and config.backend == "scripted"
    assert (config.rubric, config.mode) == ("quality", "pairwise")  # asked as the fit's labels were, when a run names neither

    again = label(LabelConfig(data, str(tmp_path / "calibrated"), judge=report["config"],
                              cache=str(tmp_path / "raw" / "cache.sqlite"), progress=False))
    assert all(r["ai_preference"] == pytest.approx(0.6, abs=1e-3) for r in again.rows)
    assert [r["chosen"] for r in again.rows] == [r["chosen"] for r in run.rows]  # the labels themselves do not move
    assert again.manifest["judge_calls"]["made"] == 0  # the same answers, from the cache: calibration is applied after


def test_calibrate_needs_soft_labels_with_human_labels(tmp_path, scripted_judge):
    from rlaif.errors import InputError
    from rlaif.labeling.calibration import calibrate

    label(LabelConfig(str(write_jsonl(tmp_path / "d.jsonl", human_rows(3))), str(tmp_path / "few"),
                      judge=scripted_judge(0.0), progress=False))
    with pytest.raises(InputError, match="3 pairs with a human label.*needs 10 or more"):
        calibrate(tmp_path / "few")
