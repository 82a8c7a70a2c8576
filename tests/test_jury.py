"""Juries: members of known behaviour on loopback servers, their panel's soft labels checked by hand."""

import json
import math
from pathlib import Path

import pytest

from rlaif.judging.base import JudgeConfigError
from rlaif.judging.jury import combine_preferences
from rlaif.labeling.quality import label_run_report
from rlaif.labeling.run import LabelConfig, label
from rlaif.stats import fleiss_kappa
from tests.conftest import write_jsonl
from tests.loopback import Loopback

PAIRS = 6
SIGMA_17 = 1 / (1 + math.exp(-1.7))  # pointwise on the loopback: expected ratings 3.85 and 2.15


def data(tmp_path: Path) -> str:
    rows = [{"id": f"r{i}", "prompt": f"question {i}", "chosen": f"GOOD answer {i}", "rejected": f"weak answer {i}"} for i in range(PAIRS)]
    return str(write_jsonl(tmp_path / "d.jsonl", rows))


def jury_file(tmp_path: Path, members: list[dict], combine: str = "mean", name: str = "jury.toml") -> str:
    lines = ['backend = "jury"', "[options]", f'combine = "{combine}"']
    for m in members:
        lines += ["[[options.members]]", *[f"{k} = {json.dumps(v)}" for k, v in m.items()]]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def servers():
    with Loopback() as good, Loopback(prefers="weak") as contrary:
        yield good, contrary


@pytest.fixture
def members(servers, judge_file):
    """Three members: pairwise on the server that prefers GOOD (P(GOOD ≻ weak) = 0.8), pointwise
    on it (σ(3.85 − 2.15) = 0.8455), and pairwise on the one that prefers the other (0.2)."""
    good, contrary = servers
    pairwise, contrarian = judge_file(good), judge_file(contrary)
    return {"pairwise": {"judge": pairwise}, "pointwise": {"judge": pairwise, "mode": "pointwise"}, "contrarian": {"judge": contrarian}}


def run(tmp_path: Path, judge: str, out: str = "out"):
    return label(LabelConfig(data(tmp_path), str(tmp_path / out), judge=judge, progress=False))


@pytest.mark.parametrize("combine, weights, p_good", [
    ("mean", (1, 1, 1), (0.8 + SIGMA_17 + 0.2) / 3),
    ("weighted", (1, 1, 4), (0.8 + SIGMA_17 + 4 * 0.2) / 6),  # the contrarian outweighs the others: the weak answer wins
    ("majority", (1, 1, 1), 2 / 3),
    ("majority", (1, 1, 3), 2 / 5),  # two votes of weight 1 for GOOD, one of weight 3 against
])
def test_the_panels_soft_label_is_its_members_combined_by_hand(tmp_path, members, combine, weights, p_good):
    ms = [{**members[k], "weight": w} for k, w in zip(("pairwise", "pointwise", "contrarian"), weights)]
    result = run(tmp_path, jury_file(tmp_path, ms, combine))
    assert result.manifest["counts"]["labeled"] == PAIRS and result.manifest["mode"] == "jury"
    for row in result.rows:
        good_won = p_good > 0.5
        assert row["chosen"].startswith("GOOD" if good_won else "weak")
        assert row["ai_preference"] == pytest.approx(max(p_good, 1 - p_good))
        assert row["human_preference"] == (1.0 if good_won else 0.0)
        p_chosen = [m["p_chosen"] for m in row["members"]]
        expected = [0.8, SIGMA_17, 0.2] if good_won else [0.2, 1 - SIGMA_17, 0.8]
        assert p_chosen == pytest.approx(expected)
        assert [m["mode"] for m in row["members"]] == ["pairwise", "pointwise", "pairwise"]
        assert len(row["members"][0]["orders"]) == 2 and len(row["members"][1]["scores"]) == 2


def test_the_report_shows_each_member_the_panel_and_their_agreement(tmp_path, members):
    judge = jury_file(tmp_path, [members["pairwise"], members["pointwise"], members["contrarian"]])
    run(tmp_path, judge)
    report = label_run_report(tmp_path / "out")
    jury = report["jury"]
    assert [m["agreement"] for m in jury["members"]] == [1.0, 1.0, 0.0]
    assert report["agreement"] == 1.0 and jury["combine"] == "mean"
    # Every pair: two votes for GOOD, one against. P_i = (2² + 1² − 3) / (3·2) = 1/3; p = 2/3, P_e = 5/9; κ = (1/3 − 5/9) / (4/9).
    assert jury["fleiss_kappa"] == pytest.approx(-0.5) and jury["unanimous"] == 0.0
    assert jury["panel_lift_over_best_member"]["difference"] == 0.0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Jury members" in card and "| 100.0% |" in card and "| 0.0% |" in card and "Fleiss' kappa -0.500" in card


def test_a_member_added_later_costs_only_its_own_calls(tmp_path, servers, members):
    good, contrary = servers
    run(tmp_path, jury_file(tmp_path, [members["pairwise"], members["contrarian"]], name="two.toml"))
    assert (good.requests, contrary.requests) == (2 * PAIRS, 2 * PAIRS)  # both orders of each pair, each member
    three = run(tmp_path, jury_file(tmp_path, [members["pairwise"], members["pointwise"], members["contrarian"]], name="three.toml"))
    assert (good.requests, contrary.requests) == (4 * PAIRS, 2 * PAIRS)  # only the new member's two responses a pair
    assert three.manifest["judge_calls"] == {"per": "member's request", "total": 6 * PAIRS, "made": 2 * PAIRS, "cached": 4 * PAIRS}
    alone = run(tmp_path, members["pairwise"]["judge"])  # the member on its own: its answers are already cached
    assert alone.manifest["judge_calls"]["made"] == 0 and good.requests == 4 * PAIRS


def test_a_members_failed_answer_fails_the_pair_and_names_the_member(tmp_path, servers, members):
    good, _ = servers
    good.fault = lambda n, prompt: "unparseable" if "question 3" in prompt and "Response 1:" in prompt else None
    result = run(tmp_path, jury_file(tmp_path, [members["pairwise"], members["contrarian"]]))
    assert result.manifest["counts"]["labeled"] == PAIRS - 1 and result.manifest["counts"]["failed"]["judge"] == 1
    failures = [f for f in result.failures if f["stage"] == "judge"]
    assert {f["id"] for f in failures} == {"r3:0-1"} and {f["judge"] for f in failures} == {members["pairwise"]["judge"]}


@pytest.mark.parametrize("options, message", [
    ('combine = "median"\nmembers = ["embedded", "embedded"]', "options.combine': expected one of mean, weighted, majority"),
    ('members = ["embedded"]', "options.members': expected a list of two or more judges"),
    ('members = ["embedded", {judge = "embedded", weight = 0}]', "options.members[1].weight': expected a number above 0"),
    ('members = ["embedded", {judge = "embedded", mode = "sideways"}]', "options.members[1].mode': expected one of pairwise, pointwise"),
    ('members = ["embedded", "no-such-judge"]', "no-such-judge: no such judge config file or built-in name"),
    ('members = ["embedded", "embedded"]\nvote = 1', "unknown key(s) vote in 'options'"),
    ('members = ["embedded", "inner.toml"]', "a jury's member is one judge, not a jury"),
])
def test_bad_jury_configs_say_what_and_where(tmp_path, options, message):
    (tmp_path / "inner.toml").write_text('backend = "jury"\n[options]\nmembers = ["embedded", "embedded"]\n')
    path = tmp_path / "bad.toml"
    path.write_text(f'backend = "jury"\n[options]\n{options}\n')
    with pytest.raises(JudgeConfigError) as e:
        label(LabelConfig(data(tmp_path), str(tmp_path / "out"), judge=str(path), progress=False))
    assert str(e.value).startswith(str(path)) and message in str(e.value)
    assert not (tmp_path / "out").exists()


def test_the_runs_mode_reaches_only_the_members_that_answer_in_it(tmp_path, monkeypatch):
    from rlaif.judging.engine import JudgeSpec
    from rlaif.judging.rubric import load_rubric

    monkeypatch.chdir(tmp_path)  # where the built-in reward-model judge finds a model directory (its config is all a spec reads)
    (tmp_path / "outputs" / "rm-judge").mkdir(parents=True)
    (tmp_path / "outputs" / "rm-judge" / "config.json").write_text("{}")

    spec = JudgeSpec.build("rm-embedded-jury", load_rubric("quality"), "pairwise")  # as GRPO asks for its judge
    # the reward model has no other mode; the embedded one is set to pointwise
    assert [m.mode for m in spec.members] == ["pointwise", "pointwise"]
    (tmp_path / "mixed.toml").write_text('backend = "jury"\n[options]\nmembers = ["reward-model", "embedded"]\n')
    mixed = JudgeSpec.build(str(tmp_path / "mixed.toml"), load_rubric("quality"), "pairwise")
    assert [m.mode for m in mixed.members] == ["pointwise", "pairwise"]
    assert [m["mode"] for m in mixed.config.options["members"]] == ["pointwise", "pairwise"]  # what the manifest and a calibrated copy hold


def test_a_jury_that_names_itself_is_refused(tmp_path):
    path = tmp_path / "self.toml"
    path.write_text('backend = "jury"\n[options]\nmembers = ["embedded", "self.toml"]\n')
    with pytest.raises(JudgeConfigError, match=r"members\[1\]'.*a jury's member is one judge, not a jury"):
        label(LabelConfig(data(tmp_path), str(tmp_path / "out"), judge=str(path), progress=False))


def test_a_dry_run_counts_each_members_calls_at_its_own_prices(tmp_path, servers, judge_file):
    good, contrary = servers
    priced = judge_file(good, price_input_per_mtok=1000.0, price_output_per_mtok=0.0)
    result = label(LabelConfig(data(tmp_path), str(tmp_path / "out"),
                               judge=jury_file(tmp_path, [{"judge": priced}, {"judge": judge_file(contrary)}]),
                               dry_run=True, progress=False))
    alone = label(LabelConfig(data(tmp_path), str(tmp_path / "alone"), judge=priced, dry_run=True, progress=False))
    assert result.estimate["calls"] == 4 * PAIRS and alone.estimate["calls"] == 2 * PAIRS
    assert alone.estimate["estimated_cost"] > 0
    assert result.estimate["estimated_cost"] == pytest.approx(alone.estimate["estimated_cost"])  # the unpriced member costs nothing here
    assert good.requests == contrary.requests == 0


def test_combine_rules_and_fleiss_kappa_by_hand():
    assert combine_preferences([0.9, 0.6, 0.3], [1, 1, 1], "mean") == pytest.approx(0.6)
    assert combine_preferences([0.9, 0.6, 0.3], [2, 1, 1], "weighted") == pytest.approx((1.8 + 0.6 + 0.3) / 4)
    assert combine_preferences([0.9, 0.5, 0.3], [1, 1, 2], "majority") == pytest.approx((1 + 0.5 + 0) / 4)
    assert fleiss_kappa([[True, True], [False, False]]) == pytest.approx(1.0)  # unanimous on items that differ
    # Items with 3, 2 and 0 votes of 3 for "yes": P_i = 1, 1/3, 1 -> P̄ = 7/9; p = 5/9, P_e = 41/81; κ = (7/9 − 41/81) / (40/81) = 22/40.
    assert fleiss_kappa([[True] * 3, [True, True, False], [False] * 3]) == pytest.approx(22 / 40)
    assert fleiss_kappa([[True, True]]) is None  # every vote one way: chance agreement is 1
