"""`rlaif iterate`: rounds of sample -> label -> train, each in its own directory, resumable,
summed up against the starting policy."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rlaif.errors import ConfigError
from rlaif.trainers import TrainConfig, train
from rlaif.workflows.iterate import IterateConfig, iterate
from tests.conftest import write_jsonl
from tests.loopback import Loopback
from tests.test_trainers import pairs  # noqa: F401 - a fixture

TRAIN = {"max_steps": 4, "batch_size": 2, "lr": 1e-3, "max_length": 96, "save_steps": 2, "lr_scheduler": "constant"}


def prompts(tmp_path, n=4, name="prompts.jsonl"):
    return str(write_jsonl(tmp_path / name, [{"id": f"{name}-{i}", "prompt": f"Question {i}: what is {i} plus {i}?"} for i in range(n)]))


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_dpo_rounds_each_in_its_own_directory_then_compared_with_the_start(tiny, pairs, tmp_path, scripted_judge):  # noqa: F811
    gold = tmp_path / "gold"
    train(TrainConfig(method="rm", data=pairs, model=tiny, output=str(gold), max_steps=1, batch_size=2, progress=False))
    cfg = IterateConfig(prompts(tmp_path), prompts(tmp_path, 3, "eval.jsonl"), str(tmp_path / "loop"), rounds=2, model=tiny,
                        judge=scripted_judge(), max_new_tokens=8, train=TRAIN, gold_rm=str(gold), progress=False)
    metrics = iterate(cfg)
    out = tmp_path / "loop"
    for r in (1, 2):
        d = out / f"round-{r}"
        assert (d / "labels" / "pairs.jsonl").exists() and (d / "labels" / "manifest.json").exists()
        assert len(losses(d / "model")) == 4 and (d / "model" / "model.safetensors").exists()
    # each round starts from the last one's policy, and samples with the new policy
    assert json.loads((out / "round-2" / "model" / "train_config.json").read_text())["model"] == str(out / "round-1" / "model")
    assert json.loads((out / "round-1" / "model" / "train_config.json").read_text())["model"] == tiny
    assert json.loads((out / "round-2" / "labels" / "manifest.json").read_text())["config"]["generator"] == str(out / "round-1" / "model")
    assert set(metrics["matchups"]) == {"round-1 vs base", "round-2 vs base"}
    assert metrics["policies"]["base"]["kl_to_base"] == 0.0
    table = (out / "rounds.md").read_text().splitlines()
    assert table[0] == ("| round | pairs labeled | consistent across orders | train loss (first → last) "
                        "| win rate vs start [95% CI] | BT rating | gold reward | KL to start ± SE | length (tokens) |")
    assert [line.split(" | ")[0] for line in table[2:]] == ["| 0 (start)", "| 1", "| 2"]
    assert [line.split(" | ")[6] for line in table[2:]] == [f"{metrics['policies'][p]['gold_reward']:.3f}"
                                                            for p in ("base", "round-1", "round-2")]
    assert (out / "report.md").exists() and "round-2" in (out / "report.md").read_text()

    # a rerun with one more round redoes nothing of rounds 1 and 2
    before = {r: (out / f"round-{r}" / "model" / "model.safetensors").stat().st_mtime_ns for r in (1, 2)}
    iterate(IterateConfig(**{**cfg.__dict__, "rounds": 3}))
    assert {r: (out / f"round-{r}" / "model" / "model.safetensors").stat().st_mtime_ns for r in (1, 2)} == before
    assert len(losses(out / "round-3" / "model")) == 4


def test_settings_the_loop_makes_itself_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="train.model"):
        IterateConfig("p.jsonl", "e.jsonl", train={"model": "x"})
    with pytest.raises(ConfigError, match="method"):
        IterateConfig("p.jsonl", "e.jsonl", method="sft")


def test_a_loop_killed_mid_training_resumes_at_its_round_and_step(tiny, tmp_path, judge_file):
    train_file = tmp_path / "train.toml"
    train_file.write_text("hard_labels = true\nmax_steps = 8\nbatch_size = 2\nlr = 1e-3\nmax_length = 96\n"
                          "save_steps = 2\nlr_scheduler = \"constant\"\n")
    with Loopback() as srv:
        judge = judge_file(srv, timeout=5.0)

        def command(out):
            return [sys.executable, "-m", "rlaif.cli", "iterate", "--prompts", prompts(tmp_path),
                    "--eval-data", prompts(tmp_path, 2, "eval.jsonl"),
                    "--output", str(out), "--rounds", "2", "--model", tiny, "--judge", judge, "--max-new-tokens", "8",
                    "--train-config", str(train_file), "--quiet"]

        env = {**os.environ, "RLAIF_TEST_KEY": "k"}
        subprocess.run(command(tmp_path / "whole"), check=True, env=env, capture_output=True)
        killed = tmp_path / "killed"
        proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not list((killed / "round-2" / "model").glob("checkpoint-*")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (killed / "round-2" / "model" / "model.safetensors").exists()  # it died in round 2's training
        result = subprocess.run(command(killed), check=True, env=env, capture_output=True, text=True)
    assert "round-1/model: already trained with these settings" in result.stdout and "\n| round | pairs labeled" in result.stdout
    for r in (1, 2):
        assert len(set(losses(killed / f"round-{r}" / "model"))) > 1  # it learned something (hard labels of the judge's ties)
        assert losses(killed / f"round-{r}" / "model") == pytest.approx(losses(tmp_path / "whole" / f"round-{r}" / "model"), rel=1e-5)


def test_a_ppo_round_updates_a_reward_model_on_the_rounds_pairs_then_trains_ppo_against_it(tiny, tmp_path, scripted_judge):
    cfg = IterateConfig(prompts(tmp_path), prompts(tmp_path, 2, "eval.jsonl"), str(tmp_path / "loop"), rounds=2, model=tiny,
                        judge=scripted_judge(), method="ppo", max_new_tokens=6,
                        train={"max_steps": 2, "rollout_batch_size": 2, "mini_batch_size": 2, "max_new_tokens": 6},
                        rm_train={"max_steps": 2, "batch_size": 2, "hard_labels": True}, progress=False)
    iterate(cfg)
    out = tmp_path / "loop"
    rm1, rm2 = (json.loads((out / f"round-{r}" / "rm" / "train_config.json").read_text()) for r in (1, 2))
    assert rm1["data"] == str(out / "round-1" / "labels" / "pairs.jsonl") and rm1["model"] == tiny and rm1["train_layers"] == 0
    assert rm2["model"] == str(out / "round-1" / "rm")  # the reward model is updated, round after round
    ppo2 = json.loads((out / "round-2" / "model" / "train_config.json").read_text())
    assert (ppo2["method"], ppo2["model"], ppo2["reward_model"]) == ("ppo", str(out / "round-1" / "model"), str(out / "round-2" / "rm"))
    assert "| 2 |" in (out / "rounds.md").read_text()
