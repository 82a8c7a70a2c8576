"""`rlaif compare` end to end on tiny config-built models, checked against its own files."""

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import mean, stdev
from typing import ClassVar

import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.evaluate.compare import CompareConfig, compare
from rlaif.evaluate.scoring import summed_response_logps
from rlaif.judging import configs as judge_configs
from rlaif.judging.base import Judge, JudgeRequest, Verdict
from rlaif.labeling.run import LabelConfig, label
from rlaif.storage.cache import AnswerCache
from rlaif.trainers import TrainConfig, train
from tests.conftest import write_jsonl


class LongerJudge(Judge):
    """Prefers the longer response (by characters), whichever order it is shown in; equal is a tie."""

    @dataclass
    class Options:
        pass

    calls: ClassVar[int] = 0

    def judge(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        for i, r in enumerate(requests):
            LongerJudge.calls += 1
            first, second = r.prompt.split("Response 1:")[1].split("Response 2:")
            second = second.split("\n\n")[0]
            first = first.strip()
            second = second.strip()
            on_result(i, Verdict(p_first=0.5 if len(first) == len(second) else 0.9 if len(first) > len(second) else 0.1))


def answers_in(path) -> int:
    cache = AnswerCache(path)
    try:
        return len(cache)
    finally:
        cache.close()


def pairs_rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"q{i}", "prompt": f"Is {i} even?", "chosen": f"{i} is {'even' if i % 2 == 0 else 'odd'}.",
             "rejected": "Maybe."} for i in range(start, start + n)]


@pytest.fixture
def experiment(tiny, tmp_path, scripted_judge):
    """Two DPO runs of the tiny model (on AI labels, on human labels), one that did not move
    (lr 0), a gold reward model, and an AI label run with human labels."""
    human = write_jsonl(tmp_path / "human.jsonl", pairs_rows(12))
    label(LabelConfig(str(human), str(tmp_path / "ai-labels"), judge=scripted_judge(0.3), progress=False))
    common = {"model": tiny, "max_steps": 3, "batch_size": 4, "lr": 1e-2, "progress": False}
    train(TrainConfig(method="dpo", data=str(tmp_path / "ai-labels" / "pairs.jsonl"), output=str(tmp_path / "dpo-ai"),
                      hard_labels=True, **common))
    train(TrainConfig(method="dpo", data=str(human), output=str(tmp_path / "dpo-human"), **common))
    train(TrainConfig(method="dpo", data=str(human), output=str(tmp_path / "unmoved"), **{**common, "lr": 0.0, "max_steps": 1}))
    train(TrainConfig(method="rm", data=str(human), output=str(tmp_path / "gold"), **common))
    evaluation = write_jsonl(tmp_path / "eval.jsonl", pairs_rows(6, start=100))
    return tmp_path, evaluation


def test_compare_end_to_end(tiny, experiment, monkeypatch):
    root, evaluation = experiment
    monkeypatch.setitem(judge_configs.BACKENDS, "longer", "tests.test_compare:LongerJudge")
    (root / "longer.toml").write_text('backend = "longer"\n')
    config = CompareConfig(
        runs=[str(root / "dpo-ai"), str(root / "dpo-human"), str(root / "unmoved")], eval_data=str(evaluation), output=str(root / "cmp"),
        judge=str(root / "longer.toml"), gold_rm=str(root / "gold"), labels=[str(root / "ai-labels")], samples=2, max_new_tokens=8,
        temperature=1.0, bertscore_model=tiny, all_pairs=True, progress=False,
    )
    metrics = compare(config)
    out = root / "cmp"
    rows = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 6 * 2  # the base and three runs, 6 prompts, 2 samples
    assert metrics == json.loads((out / "metrics.json").read_text())

    # each run is named by what it learned from, read from its own train_config.json
    assert ("AI labels" in metrics["policies"]["dpo-ai"]["trained_on"]
            and "human labels (human)" in metrics["policies"]["dpo-human"]["trained_on"])

    # win rates recomputed from the responses: the longer response wins, equal length ties
    for name in ("dpo-ai", "dpo-human"):
        by_prompt = defaultdict(list)
        base = {(r["prompt_id"], r["sample"]): r["response"] for r in rows if r["policy"] == "base"}
        for r in rows:
            if r["policy"] == name:
                mine, theirs = len(r["response"].strip()), len(base[(r["prompt_id"], r["sample"])].strip())
                by_prompt[r["prompt_id"]].append(0.5 if mine == theirs else float(mine > theirs))
        assert metrics["matchups"][f"{name} vs base"]["win_rate"] == pytest.approx(mean(mean(v) for v in by_prompt.values()))

    # a run whose weights did not move: the same samples as the base, KL 0, every comparison a tie
    unmoved = metrics["matchups"]["unmoved vs base"]
    assert unmoved["win_rate"] == 0.5 and unmoved["ties"] == 1.0 and unmoved["lc_win_rate"] is None
    assert metrics["policies"]["unmoved"]["kl_to_base"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["policies"]["base"]["kl_to_base"] == 0.0

    # KL of a trained run: mean of log π − log π_base over its own samples, recomputed here
    mine = [r for r in rows if r["policy"] == "dpo-human"]
    items = [(r["prompt"], r["response"]) for r in mine]
    kl = mean(a - b for a, b in zip(summed_response_logps(str(root / "dpo-human"), items), summed_response_logps(tiny, items)))
    assert metrics["policies"]["dpo-human"]["kl_to_base"] == pytest.approx(kl, rel=1e-4, abs=1e-4)
    per_prompt: dict[str, list[float]] = {}
    for r, a, b in zip(mine, summed_response_logps(str(root / "dpo-human"), items), summed_response_logps(tiny, items)):
        per_prompt.setdefault(r["prompt_id"], []).append(a - b)
    diffs = [mean(v) for v in per_prompt.values()]
    assert metrics["policies"]["dpo-human"]["kl_to_base_se"] == pytest.approx(stdev(diffs) / len(diffs) ** 0.5, rel=1e-3)  # over prompts
    assert abs(kl) > 1e-3  # it did move

    # gold reward: means and the paired difference to the base, from the scores in responses.jsonl
    gold = {name: mean(r["gold_score"] for r in rows if r["policy"] == name) for name in metrics["policies"]}
    assert metrics["policies"]["dpo-ai"]["gold_reward"] == pytest.approx(gold["dpo-ai"])
    assert metrics["matchups"]["dpo-ai vs base"]["gold_reward_difference"]["difference"] == pytest.approx(gold["dpo-ai"] - gold["base"])
    # --all-pairs: the trained policies against each other too, by the judge and by the gold reward
    assert (metrics["matchups"]["dpo-ai vs dpo-human"]["gold_reward_difference"]["difference"]
            == pytest.approx(gold["dpo-ai"] - gold["dpo-human"]))
    assert set(metrics["matchups"]) == {"dpo-ai vs base", "dpo-human vs base", "unmoved vs base",
                                        "dpo-ai vs dpo-human", "dpo-ai vs unmoved", "dpo-human vs unmoved"}
    assert 0.0 <= metrics["reward_models"]["gold"]["accuracy"] <= 1.0 and metrics["reward_models"]["gold"]["pairs"] == 6

    # reference metrics against the human-preferred responses; METEOR says why it is missing, if it is
    ref = metrics["policies"]["base"]["reference_metrics"]
    assert all(0.0 <= ref[k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu1", "bleu4", "bertscore"))
    assert isinstance(ref["meteor"], float) or "WordNet" in ref["meteor"]["unavailable"]

    # the label run: agreement and a confusion matrix over its human-labeled pairs
    labels = metrics["labels"]["ai-labels"]
    assert sum(map(sum, labels["confusion"])) == labels["with_human_label"] == 12
    assert labels["confusion"][0][0] + labels["confusion"][1][1] == round(labels["agreement"] * 12)

    # the report, its figures, and a rerun that asks for nothing again
    report = (out / "report.md").read_text()
    assert "| `dpo-ai` |" in report and "**no measurable difference** between `unmoved` and `base`" in report
    assert set(metrics["figures"]) == {"win_rates.png", "reward_vs_kl.png", "confusion_ai-labels.png", "lengths.png"}
    assert all((out / f).read_bytes()[:4] == b"\x89PNG" for f in metrics["figures"])
    calls, cached = LongerJudge.calls, answers_in(out / "cache.sqlite")
    again = compare(config)
    assert LongerJudge.calls == calls and again["matchups"] == metrics["matchups"]
    assert answers_in(out / "cache.sqlite") == cached  # nothing generated or scored again


def test_compare_with_the_reward_model_judge_scores_each_response_alone(tiny, experiment):
    root, evaluation = experiment
    judge = root / "rm-judge.toml"
    judge.write_text(f'backend = "reward_model"\nmodel = "{root / "gold"}"\n')
    metrics = compare(CompareConfig(runs=[str(root / "dpo-ai"), str(root / "unmoved")], eval_data=str(evaluation),
                                    output=str(root / "cmp-rm"), judge=str(judge), gold_rm=str(root / "gold"),
                                    max_new_tokens=8, bertscore_model=tiny, progress=False))
    assert metrics["judge"]["mode"] == "pointwise"
    records = [json.loads(line) for line in (root / "cmp-rm" / "judgments.jsonl").read_text().splitlines()]
    gold = {(r["policy"], r["prompt_id"]): r["gold_score"]
            for r in map(json.loads, (root / "cmp-rm" / "responses.jsonl").read_text().splitlines())}
    for r in records:
        assert "orders" not in r and [s["of"] for s in r["scores"]] == [r["a"], "base"]
        # the judge is the gold model itself: its scores are the gold scores of the two responses
        assert ([s["score"] for s in r["scores"]]
                == pytest.approx([gold[(r["a"], r["prompt_id"])], gold[("base", r["prompt_id"])]], abs=1e-4))
    assert metrics["matchups"]["unmoved vs base"]["ties"] == 1.0  # the same responses score the same


def test_compare_on_the_command_line(tiny, experiment, monkeypatch):
    root, evaluation = experiment
    args = ["compare", str(root / "dpo-human"), "--eval-data", str(evaluation), "--output", str(root / "cli"), "--limit", "2",
            "--max-new-tokens", "4", "--judge", "embedded", "--bertscore-model", tiny, "--quiet"]
    monkeypatch.setitem(judge_configs.BACKENDS, "longer", "tests.test_compare:LongerJudge")
    (root / "longer.toml").write_text('backend = "longer"\n')
    args[args.index("embedded")] = str(root / "longer.toml")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# rlaif compare: 1 policies and their base on 2 prompts")
    bad = CliRunner().invoke(main, ["compare", str(root), "--eval-data", str(evaluation), "--output", str(root / "x")])
    assert bad.exit_code != 0 and "not an `rlaif train` output" in bad.output


def test_experiment_file_errors_name_the_file_and_key(tmp_path):
    from rlaif.errors import ConfigError
    from rlaif.workflows.experiment import read_experiment

    base = '[data]\nsource = "x.jsonl"\ntrain = [0, 10]\neval = [10, 20]\ngold = [20, 30]\n'
    path = tmp_path / "e.toml"
    path.write_text(base)
    assert read_experiment(path)["ranges"]["eval"] == range(10, 20)
    for text, message in (
        (base.replace("gold = [20, 30]", "gold = [15, 30]"), "overlap"),
        (base + "[train]\nlearning_rate = 1\n", "key 'train.learning_rate'"),
        (base + "[train]\ndata = 'other.jsonl'\n", "key 'train.data'"),
        (base.replace('eval = [10, 20]\n', ''), "key 'data.eval': missing"),
        ("colour = 1\n" + base, "key 'colour'"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as err:
            read_experiment(path)
        assert str(err.value).startswith(str(path))


def test_the_demo_experiment_file_is_valid():
    from pathlib import Path

    from rlaif.workflows.experiment import read_experiment

    spec = read_experiment(Path(__file__).resolve().parent.parent / "examples" / "compare-demo.toml")
    assert spec["data"]["source"] == "examples/hh-harmless.jsonl.gz" and spec["label"]["judge"] == "embedded"


def test_experiment_end_to_end_on_a_tiny_model(tiny, tmp_path, scripted_judge, capsys):
    from rlaif.workflows.experiment import run_experiment

    source = write_jsonl(tmp_path / "pairs.jsonl", pairs_rows(30))
    spec = tmp_path / "exp.toml"
    spec.write_text(f'''output = "{tmp_path / 'exp'}"
model = "{tiny}"
[data]
source = "{source}"
train = [0, 12]
eval = [12, 16]
gold = [16, 30]
[label]
judge = "{scripted_judge(0.3)}"
[train]
max_steps = 2
lr = 1e-2
hard_labels = true
[gold_rm]
max_steps = 2
train_layers = 0
[compare]
max_new_tokens = 4
bertscore_model = "{tiny}"
''')
    metrics = run_experiment(spec, progress=False)
    out = tmp_path / "exp"
    assert json.loads((out / "labels" / "manifest.json").read_text())["counts"]["examples"] == 12
    assert (out / "labels" / "agreement.json").exists() and (out / "report.md").exists()
    assert set(metrics["policies"]) == {"base", "dpo-ai-labels", "dpo-human-labels"}
    assert "AI labels" in metrics["policies"]["dpo-ai-labels"]["trained_on"]
    assert metrics["policies"]["dpo-human-labels"]["trained_on"] == "DPO on human labels (train-human-labels)"
    # the same pairs in the same order, chosen by the human instead of the judge
    ai_rows = [json.loads(line) for line in (out / "labels" / "pairs.jsonl").read_text().splitlines()]
    human_rows = [json.loads(line) for line in (out / "train-human-labels.jsonl").read_text().splitlines()]
    assert [r["id"] for r in human_rows] == [r["id"] for r in ai_rows]
    assert all((h["chosen"] == a["chosen"]) == (a["human_preference"] == 1.0) for h, a in zip(human_rows, ai_rows))
    assert metrics["labels"]["labels"]["with_human_label"] == 12 and metrics["reward_models"]["gold-rm"]["pairs"] == 4
    ai_config = json.loads((out / "dpo-ai-labels" / "train_config.json").read_text())
    human_config = json.loads((out / "dpo-human-labels" / "train_config.json").read_text())
    assert ({k: v for k, v in ai_config.items() if k not in ("data", "output")}
            == {k: v for k, v in human_config.items() if k not in ("data", "output")})
    capsys.readouterr()
    run_experiment(spec, progress=False)  # a rerun trains nothing again
    assert capsys.readouterr().out.count("already trained with these settings") == 3


def test_runs_are_named_by_what_they_learned_from(tmp_path):
    from dataclasses import asdict

    from rlaif.evaluate.compare import describe_run

    def run(name, **settings):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train_config.json").write_text(json.dumps(asdict(TrainConfig(output=str(tmp_path / name), **settings))))
        return str(tmp_path / name)

    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "manifest.json").write_text(json.dumps({"judge": {"name": "openai"}, "rubric": {"name": "harmlessness"}}))
    ai = run("dpo-ai", method="dpo", data=str(tmp_path / "labels" / "pairs.jsonl"))
    rm = run("rm-human", method="rm", data="examples/hh-harmless.jsonl.gz", hard_labels=True)
    assert describe_run(ai).trained_on == "DPO on AI labels (openai judge, harmlessness rubric, soft)"
    assert describe_run(run("ppo", method="ppo", data="prompts.jsonl", reward_model=rm)).trained_on == \
        "PPO against a reward model on human labels (hh-harmless)"
    assert describe_run(run("grpo-j", method="grpo", data="prompts.jsonl", reward_judge="judges/openai.toml")).trained_on == \
        "GRPO against the openai judge's preferences within groups"
    assert describe_run(run("grpo-f", method="grpo", data="prompts.jsonl", reward_function="rewards.py:short")).trained_on == \
        "GRPO against the reward function rewards.py:short"
