"""The objectives beside DPO (SimPO, ORPO, KTO), weights, and the method table: step by step
equal to TRL's trainers, from the command line on the bundled pairs and on what `rlaif label`
writes, and a setting meant for another method refused."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from rlaif.cli import main
from rlaif.errors import ConfigError, InputError
from rlaif.labeling.run import LabelConfig, label
from rlaif.trainers import TrainConfig, train
from rlaif.trainers.methods import REGISTRY, methods_table
from rlaif.trainers.pairs import load_pairs, load_unpaired
from tests.conftest import HH, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    rows = [{"prompt": f"Is {i} a number?", "chosen": f"Yes, {i} is a number.", "rejected": "no no no no no no",
             "ai_preference": 0.9} for i in range(24)]
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", rows))


def metrics(out: Path) -> list[dict]:
    """The training steps' rows of metrics.jsonl (not the held-out ones)."""
    return [row for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in (row := json.loads(line))]


def config(method, data, model, out, **kw) -> TrainConfig:
    return TrainConfig(method=method, data=data, model=model, output=str(out), progress=False, **{"batch_size": 4, "lr": 3e-3, **kw})


@pytest.mark.parametrize("method", ["simpo", "orpo", "kto"])
def test_per_step_losses_equal_trls_trainer(tiny, method):
    """The side-by-side benchmark on a tiny model: the same pairs in the same order, three steps
    at a learning rate that moves the model; every step's loss equal to TRL's to 1e-5."""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "trainers_vs_trl.py", "--method", method, "--model", tiny, "--runs", "1",
                          "--steps", "3", "--pairs", "16", "--lr", "1e-3"], cwd=ROOT / "bench", env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in run.stdout.splitlines() if line.startswith(("| rlaif loss", "| TRL loss"))}
    ours, theirs = ([float(x) for x in rows[name].strip("| \n").split(" | ")[1:]] for name in ("rlaif loss", "TRL loss"))
    assert len(ours) == len(theirs) == 3 and len(set(ours)) > 1  # the steps moved the loss
    difference = float(run.stdout.split("largest per-step loss difference: ")[1].split()[0])
    assert difference < 1e-5


@pytest.mark.parametrize("method", ["simpo", "orpo", "kto"])
def test_each_objective_learns_the_preference(tiny, pairs, tmp_path, method):
    results = train(config(method, pairs, tiny, tmp_path, max_steps=8, eval_split=0.25))
    rows = metrics(tmp_path)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert results["eval/rewards/chosen"] > results["eval/rewards/rejected"]
    if method == "kto":  # policy = reference at the first step: r = z = 0, so each row costs 1 − σ(0)
        assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-6) and (tmp_path / "reference_logps.pt").exists()
    else:
        assert not (tmp_path / "reference_logps.pt").exists()  # no reference pass
    assert AutoModelForCausalLM.from_pretrained(tmp_path) is not None


@pytest.mark.parametrize("method", ["simpo", "orpo", "kto"])
def test_the_command_line_trains_on_the_bundled_hh_pairs(tiny, tmp_path, method):
    run = CliRunner().invoke(main, ["train", "--method", method, "--data", f"{HH}?rows=0:12", "--model", tiny,
                                    "--max-steps", "2", "--batch-size", "4",
                                    "--max-length", "128", "--output", str(tmp_path), "--quiet"])
    assert run.exit_code == 0, run.output
    assert f"saved to {tmp_path}" in run.output and len(metrics(tmp_path)) == 2
    if method == "kto":
        assert "kto: 12 desirable and 12 undesirable training rows" in run.output


def test_objectives_train_on_the_pairs_rlaif_label_wrote(tiny, scripted_judge, tmp_path):
    rows = [{"prompt": f"Question {i}?", "responses": [f"GOOD answer {i}", f"bad answer {i}"]} for i in range(8)]
    labeled = label(LabelConfig(str(write_jsonl(tmp_path / "prompts.jsonl", rows)), str(tmp_path / "labels"),
                                judge=scripted_judge(), progress=False))
    written = str(labeled.output_dir / "pairs.jsonl")
    assert len(load_pairs(written)) == 8
    for method in ("simpo", "orpo", "kto"):
        results = train(config(method, written, tiny, tmp_path / method, max_steps=4, eval_split=0.25))
        assert math.isfinite(results["eval/loss"])
    unpaired = load_unpaired(written)
    assert [r.desirable for r in unpaired[:2]] == [True, False] and unpaired[0].completion.startswith("GOOD")


def test_kto_reads_unpaired_rows_scored_rows_and_pointwise_scores(tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "completion": "a", "label": True},
                                                 {"prompt": "p", "completion": "b", "label": False, "weight": 2}])
    assert [(r.completion, r.desirable, r.weight) for r in load_unpaired(str(rows))] == [("a", True, 1.0), ("b", False, 2.0)]
    assert [r.weight for r in load_unpaired(str(rows), weights="none")] == [1.0, 1.0]
    scored = write_jsonl(tmp_path / "scored.jsonl", [{"prompt": "p", "completion": "a", "score": 4},
                                                    {"prompt": "p", "completion": "b", "score": 2}])
    assert [r.desirable for r in load_unpaired(str(scored), threshold=3)] == [True, False]
    with pytest.raises(InputError, match=r"scored.jsonl:1: field 'label'.*--desirable-threshold"):
        load_unpaired(str(scored))
    # a pointwise judge's pairs.jsonl: each response desirable by its own score, not by which was chosen
    pointwise = {"prompt": "p", "chosen": "a", "rejected": "b", "ai_preference": 0.6,
                 "scores": [{"response": "chosen", "score": 4.5}, {"response": "rejected", "score": 3.5}]}
    assert [r.desirable for r in load_unpaired(str(write_jsonl(tmp_path / "pw.jsonl", [pointwise])), threshold=3)] == [True, True]
    assert [r.desirable for r in load_unpaired(str(tmp_path / "pw.jsonl"))] == [True, False]
    assert [r.weight for r in load_unpaired(str(tmp_path / "pw.jsonl"), weights="confidence")] == pytest.approx([0.2, 0.2])
    with pytest.raises(InputError, match=r"pairs.jsonl:1: field 'scores'"):
        load_unpaired(str(write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])), threshold=3)
    with pytest.raises(InputError, match=r"bad.jsonl:1: field 'weight'"):
        load_unpaired(str(write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "a", "label": True, "weight": -1}])))


def test_weights_scale_each_pairs_loss_in_training(tiny, pairs, tmp_path):
    rows = [{**json.loads(line), "weight": 0} for line in Path(pairs).read_text().splitlines()]
    nothing = str(write_jsonl(tmp_path / "zero.jsonl", rows))
    for method in ("dpo", "simpo", "rm", "kto"):  # every example weighs 0: no loss, no gradient, the model unchanged
        train(config(method, nothing, tiny, tmp_path / method, max_steps=2))
        assert all(r["loss"] == 0 for r in metrics(tmp_path / method))
    before = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "dpo").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the same data read with --weights none trains as unweighted
    train(config("dpo", nothing, tiny, tmp_path / "none", max_steps=1, weights="none"))
    assert metrics(tmp_path / "none")[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert [p.weight for p in load_pairs(pairs, weights="confidence")][:1] == pytest.approx([0.8])


def test_kto_resumed_further_than_the_stopped_run_equals_one_run(tiny, pairs, tmp_path):
    """A run stopped at 3 steps and resumed to 9 needs the reference of batches the first never
    read: it computes them, and ends where one 9-step run does."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    same = {"save_steps": 3, "lr_scheduler": "constant"}
    train(config("kto", pairs, tiny, whole, max_steps=9, **same))
    train(config("kto", pairs, tiny, parts, max_steps=3, **same))
    train(config("kto", pairs, tiny, parts, max_steps=9, resume=True, **same))
    assert [r["loss"] for r in metrics(parts)] == pytest.approx([r["loss"] for r in metrics(whole)], rel=1e-5)


def test_a_setting_for_another_method_is_an_error(tiny, pairs, tmp_path):
    with pytest.raises(ConfigError, match="key 'beta': applies to --method dpo or simpo or orpo or kto, not rm"):
        TrainConfig(method="rm", data=pairs, output=str(tmp_path), beta=0.2)
    with pytest.raises(ConfigError, match="key 'desirable_weight': applies to --method kto, not dpo"):
        TrainConfig(method="dpo", data=pairs, output=str(tmp_path), desirable_weight=2.0)
    run = CliRunner().invoke(main, ["train", "--method", "simpo", "--data", pairs, "--group-size", "8", "--output", str(tmp_path)])
    assert (run.exit_code != 0 and "Error: --num-responses: applies to --method grpo, not simpo" in run.output
            and "Traceback" not in run.output)
    with pytest.raises(ConfigError, match="--batch-size 2 or more"):
        train(config("kto", pairs, tiny, tmp_path / "kto", max_steps=1, batch_size=1))
    assert TrainConfig(method="simpo", data=pairs, output=str(tmp_path)).beta == 2.0  # a method's own default
    assert TrainConfig(method="dpo", data=pairs, output=str(tmp_path)).beta == 0.1


def test_the_method_table_is_the_registry():
    assert [m.name for m in REGISTRY] == list(TrainConfig.__dataclass_fields__["method"].metadata["choices"])
    assert methods_table() in (ROOT / "docs" / "training.md").read_text()
    run = CliRunner().invoke(main, ["train", "--help"])
    assert "[sft|rm|dpo|simpo|orpo|kto|ppo|grpo]" in " ".join(run.output.split())
