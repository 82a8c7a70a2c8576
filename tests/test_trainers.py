"""Every trainer on a tiny model built from a config, a few steps each."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from rlaif.errors import ConfigError, InputError
from rlaif.models.encoding import collate, encode
from rlaif.models.loading import load_tokenizer
from rlaif.trainers import TrainConfig, train, trainer_for
from rlaif.trainers.dpo import DPOTrainer
from rlaif.trainers.loop import lr_factor
from rlaif.trainers.pairs import split
from rlaif.trainers.ppo import PPOTrainer
from tests.conftest import char_tokenizer, tiny_config, write_jsonl


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    rows = [{"prompt": f"Is {i} a number?", "chosen": f"Yes, {i} is a number.", "rejected": "no no no no no no",
             "ai_preference": 0.9} for i in range(24)]
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", rows))


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def config(method, data, model, out, **kw) -> TrainConfig:
    return TrainConfig(method=method, data=data, model=model, output=str(out), progress=False, **{"batch_size": 4, "lr": 3e-3, **kw})


def test_sft_lowers_the_loss_and_saves_a_loadable_model(tiny, pairs, tmp_path):
    results = train(config("sft", pairs, tiny, tmp_path, max_steps=8, eval_split=0.25))
    rows = metrics(tmp_path)
    assert rows[-2]["loss"] < rows[0]["loss"] - 0.5 and "eval/loss" in results
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), LlamaForCausalLM)
    assert json.loads((tmp_path / "train_config.json").read_text())["method"] == "sft"


def test_reward_model_learns_the_preference_and_loads(tiny, pairs, tmp_path):
    results = train(config("rm", pairs, tiny, tmp_path, max_steps=10, eval_split=0.25))
    rows = metrics(tmp_path)
    assert rows[-2]["loss"] < rows[0]["loss"] and results["eval/accuracy"] == 1.0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert model.config.num_labels == 1
    # the score is read at the EOS, so its embedding trains (the pad row is the one left alone)
    eos, start = model.config.eos_token_id, LlamaForCausalLM.from_pretrained(tiny).model.embed_tokens.weight
    assert not torch.equal(model.model.embed_tokens.weight[eos], start[eos])


@pytest.mark.parametrize("train_layers", [1, 2])
def test_reward_model_on_kept_frozen_blocks_trains_as_without_them(tiny, pairs, tmp_path, train_layers):
    """--train-layers 1 or 2 of 2: what enters the first trainable block is computed once per pair
    and kept, the last block runs only where the head reads; the losses step by step, the
    held-out figures and the weights equal those of the full forward pass."""
    runs = {}
    for keep in (True, False):
        out = tmp_path / ("kept" if keep else "plain")
        trainer = trainer_for(config("rm", pairs, tiny, out, epochs=3, eval_split=0.25, train_layers=train_layers))
        if not keep:  # the frozen blocks computed afresh at every step, as any other run with a layer left to train
            setup = trainer.setup

            def without_keeping(init_from, setup=setup, trainer=trainer):
                trainer._frozen_states = lambda pairs, progress=False: []
                setup(init_from)
                trainer.keeps_frozen = False

            trainer.setup = without_keeping
        runs[keep] = trainer.train(), metrics(out), trainer, AutoModelForSequenceClassification.from_pretrained(out)
    (kept, kept_rows, kept_trainer, kept_model), (plain, plain_rows, plain_trainer, plain_model) = runs[True], runs[False]
    assert len(kept_trainer.frozen) == 24 and not plain_trainer.frozen  # each training and held-out pair once
    numbers = lambda rows: [{k: v for k, v in r.items() if isinstance(v, float) and "time" not in k and "per_s" not in k} for r in rows]
    assert len(kept_rows) == len(plain_rows) >= 12
    for a, b in zip(numbers(kept_rows), numbers(plain_rows)):
        assert a.keys() == b.keys() and a == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert kept["eval/accuracy"] == plain["eval/accuracy"] and kept["eval/margin"] == pytest.approx(plain["eval/margin"], abs=1e-5)
    for (name, a), (_, b) in zip(kept_model.state_dict().items(), plain_model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_more_layers_to_train_than_the_model_has_is_an_error(tiny, pairs, tmp_path):
    with pytest.raises(ConfigError, match="--train-layers 3: the model has 2 transformer blocks"):
        train(config("rm", pairs, tiny, tmp_path, max_steps=1, train_layers=3))


def test_head_only_reward_model_fits_the_head_on_cached_features(tiny, pairs, tmp_path):
    cache = {}
    trainer = trainer_for(config("rm", pairs, tiny, tmp_path, epochs=8, eval_split=0.25, train_layers=0, lr=3e-2), frozen_cache=cache)
    results = trainer.train()
    rows = metrics(tmp_path)
    assert rows[-2]["loss"] < rows[0]["loss"] - 0.1
    assert len(cache) == 24  # every training and held-out pair, computed once (packed: its prompt once)
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert tok.pad_token_id == saved.config.pad_token_id != tok.eos_token_id  # the score is read at the EOS
    start = LlamaForCausalLM.from_pretrained(tiny)
    assert torch.equal(saved.model.layers[1].mlp.up_proj.weight, start.model.layers[1].mlp.up_proj.weight)
    assert torch.equal(saved.model.norm.weight, start.model.norm.weight)
    # the saved model's own forward pass gives the scores the cached features gave
    batch = collate([p.chosen for p in trainer.eval_pairs] + [p.rejected for p in trainer.eval_pairs], trainer.tokenizer.pad_token_id)
    with torch.no_grad():
        scores = saved(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    n = len(trainer.eval_pairs)
    assert (scores[:n] - scores[n:]).mean().item() == pytest.approx(results["eval/margin"], abs=1e-5)


def test_eval_folds_are_disjoint_and_cover_the_data():
    items = list(range(23))
    held = [split(items, 0.2, seed=3, fold=k)[1] for k in range(5)]
    assert sorted(x for h in held for x in h) == items and [len(h) for h in held] == [5, 5, 5, 5, 3]
    assert held[0] == split(items, 0.2, seed=3)[1]
    train_part, held_part = split(items, 0.2, seed=3, fold=2)
    assert sorted(train_part + held_part) == items
    with pytest.raises(ConfigError, match="eval_fold 5 is out of range: 23 items make 5 folds of 5"):
        split(items, 0.2, seed=3, fold=5)


def test_dpo_rewards_accuracies_rise_and_first_loss_is_log_2(tiny, pairs, tmp_path):
    train(config("dpo", pairs, tiny, tmp_path, max_steps=8, beta=0.5))
    rows = metrics(tmp_path)
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at step 1
    assert rows[-1]["rewards/accuracies"] > rows[0]["rewards/accuracies"] and rows[-1]["rewards/margins"] > 0
    assert {"rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"} <= set(rows[0])
    assert (tmp_path / "reference_logps.pt").exists()


def test_dpo_reference_cache_serves_later_runs_on_the_same_sequences(tiny, pairs, tmp_path, monkeypatch):
    """A run with --reference-cache keeps each sequence's reference log-probability; a run on the
    same pairs with half of them swapped computes none, and trains as it would without the cache;
    the IPO loss (averaged log-probabilities) is a different quantity and computes its own."""
    computed: list[int] = []
    all_logps = DPOTrainer.all_logps
    monkeypatch.setattr(DPOTrainer, "all_logps",
                        lambda self, model, todo, *a: computed.append(len(todo)) or all_logps(self, model, todo, *a))
    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines()]
    swapped = write_jsonl(tmp_path / "swapped.jsonl", [{**r, "chosen": r["rejected"], "rejected": r["chosen"]}
                                                       if i % 2 else r for i, r in enumerate(rows)])
    cache, settings = str(tmp_path / "cache.sqlite"), {"max_steps": 3, "eval_split": 0.25, "hard_labels": True}
    train(config("dpo", pairs, tiny, tmp_path / "first", reference_cache=cache, **settings))
    assert computed == [len(rows)]
    computed.clear()
    train(config("dpo", str(swapped), tiny, tmp_path / "cached", reference_cache=cache, **settings))
    assert computed == []
    train(config("dpo", str(swapped), tiny, tmp_path / "uncached", **settings))
    assert computed == [len(rows)]
    for split_name in ("train", "eval"):
        torch.testing.assert_close(torch.load(tmp_path / "cached" / "reference_logps.pt")[split_name],
                                   torch.load(tmp_path / "uncached" / "reference_logps.pt")[split_name], atol=1e-4, rtol=1e-5)
    losses = [[r.get("loss", r.get("eval/loss")) for r in metrics(tmp_path / run)] for run in ("cached", "uncached")]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], abs=1e-5)  # 3 steps and the held-out loss
    computed.clear()
    train(config("dpo", pairs, tiny, tmp_path / "ipo", reference_cache=cache, loss="ipo", **settings))
    assert computed == [len(rows)]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"--reference-cache .*a-file/cache.sqlite: cannot open it"):
        train(config("dpo", pairs, tiny, tmp_path / "bad", reference_cache=str(tmp_path / "a-file" / "cache.sqlite"), **settings))


@pytest.mark.parametrize("extra", [{"loss": "ipo"}, {"label_smoothing": 0.1}, {"hard_labels": True}])
def test_dpo_variants_train(tiny, pairs, tmp_path, extra):
    train(config("dpo", pairs, tiny, tmp_path, max_steps=4, **extra))
    rows = metrics(tmp_path)
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_resume_continues_to_the_same_result(tiny, pairs, tmp_path):
    """A run stopped after 3 steps and resumed to 6 equals a 6-step run. (A constant learning
    rate: a linear decay would end at 3 in the stopped run; a kill mid-run is tested below.)"""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    same = {"save_steps": 3, "grad_accum": 2, "lr_scheduler": "constant"}
    train(config("dpo", pairs, tiny, whole, max_steps=6, **same))
    train(config("dpo", pairs, tiny, parts, max_steps=3, **same))
    train(config("dpo", pairs, tiny, parts, max_steps=6, resume=True, **same))
    assert [r["loss"] for r in metrics(parts)] == pytest.approx([r["loss"] for r in metrics(whole)], rel=1e-5)
    a = AutoModelForCausalLM.from_pretrained(whole).state_dict()
    b = AutoModelForCausalLM.from_pretrained(parts).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_evaluation_every_n_steps_leaves_training_as_it_was_and_survives_a_resume(tiny, pairs, tmp_path):
    same = {"eval_split": 0.25, "lr_scheduler": "constant", "save_steps": 3}
    train(config("sft", pairs, tiny, tmp_path / "plain", max_steps=6, **same))
    train(config("sft", pairs, tiny, tmp_path / "whole", max_steps=6, eval_steps=2, **same))
    train(config("sft", pairs, tiny, tmp_path / "parts", max_steps=3, eval_steps=2, **same))
    train(config("sft", pairs, tiny, tmp_path / "parts", max_steps=6, eval_steps=2, resume=True, **same))
    whole = metrics(tmp_path / "whole")
    assert [r["step"] for r in whole if "eval/loss" in r] == [2, 4, 6]
    assert [r for r in whole if "loss" in r] == [r for r in metrics(tmp_path / "plain") if "loss" in r]
    # the stopped run's final evaluation at step 3 is not an evaluation of the resumed run
    parts = metrics(tmp_path / "parts")
    assert [r["step"] for r in parts] == [r["step"] for r in whole]
    assert all(p == pytest.approx(w, rel=1e-5) for p, w in zip(parts, whole))


def _cli_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlaif.cli", "train", *args, "--quiet"]


def test_kill_9_then_resume_matches_an_uninterrupted_run(tiny, pairs, tmp_path):
    common = ["--method", "rm", "--data", pairs, "--model", tiny, "--max-steps", "120", "--save-steps", "10", "--lr", "1e-3"]
    subprocess.run(_cli_train(*common, "--output", str(tmp_path / "whole")), check=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli_train(*common, "--output", str(killed)))
    deadline = time.time() + 120
    def saved_steps() -> list[int]:
        return [int(p.name.split("-")[1]) for p in killed.glob("checkpoint-*")]

    while not any(s >= 30 for s in saved_steps()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()  # it really died mid-run
    subprocess.run(_cli_train(*common, "--output", str(killed), "--resume"), check=True)
    assert [r["loss"] for r in metrics(killed)] == pytest.approx([r["loss"] for r in metrics(tmp_path / "whole")], rel=1e-5)


def test_two_processes_match_one_with_the_same_global_batch(tiny, pairs, tmp_path):
    common = ["--method", "rm", "--data", pairs, "--model", tiny, "--max-steps", "4", "--lr", "1e-3"]
    subprocess.run(_cli_train(*common, "--batch-size", "4", "--output", str(tmp_path / "one")), check=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rlaif.cli", "train"]
    subprocess.run(torchrun + common + ["--batch-size", "2", "--output", str(tmp_path / "two"), "--quiet"], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4, abs=1e-6)


def test_clear_errors(tiny, pairs, tmp_path):
    unlabeled = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "q", "responses": ["a", "b"]}])
    with pytest.raises(InputError, match="no usable preference pairs"):
        train(config("rm", str(unlabeled), tiny, tmp_path / "a", max_steps=1))
    long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 400, "chosen": "a", "rejected": "b"}])
    with pytest.raises(InputError) as err:
        train(config("dpo", str(long), tiny, tmp_path / "b", max_steps=1, max_length=64, truncate_prompt=False))
    assert str(err.value).startswith(f"{long}:1: field 'prompt'") and "--max-length 64" in str(err.value)
    with pytest.raises(ConfigError, match="--reward-model"):
        train(config("ppo", pairs, tiny, tmp_path / "d", max_steps=1))
    tied, tok = tmp_path / "tied", load_tokenizer(tiny)
    LlamaForCausalLM(tiny_config(len(tok), tok, tie_word_embeddings=True)).save_pretrained(tied)
    tok.save_pretrained(tied)
    with pytest.raises(ConfigError, match="--train-layers 0 leaves nothing to train"):
        train(config("sft", pairs, str(tied), tmp_path / "e", max_steps=1, train_layers=0))


def test_config_file_sets_what_the_command_line_does_not(tiny, pairs, tmp_path):
    from click.testing import CliRunner

    from rlaif.cli import main

    settings = tmp_path / "sft.yaml"
    settings.write_text(f"method: sft\ndata: {pairs}\nmodel: {tiny}\nmax-steps: 5\nlr: 1e-5\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", "--config", str(settings), "--output", str(out), "--max-steps", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["method"], saved["max_steps"], saved["lr"]) == ("sft", 1, 1e-5)  # the command line wins; YAML's 1e-5 is a number
    assert len(metrics(out)) == 1

    bad = tmp_path / "bad.toml"
    bad.write_text(f'method = "sft"\ndata = "{pairs}"\nlr_scheduler = "cosine"\n')
    result = CliRunner().invoke(main, ["train", "--config", str(bad)])
    assert result.exit_code != 0 and f"{bad}:3: key 'lr_scheduler': expected one of linear, constant" in result.output
    bad.write_text('method = "sft"\nbatch-size = "eight"\n')
    result = CliRunner().invoke(main, ["train", "--config", str(bad)])
    assert result.exit_code != 0 and f"{bad}:2: key 'batch-size': expected int, got 'eight'" in result.output


@pytest.fixture
def char_policy(tmp_path):
    """A 2-layer causal LM over characters (no chat template), saved like any model directory."""
    tok = char_tokenizer()
    policy = tmp_path / "char-policy"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config(len(tok), tok)).save_pretrained(policy)
    tok.save_pretrained(policy)
    return policy


def lowercase_share(prompts, texts):
    """A toy reward: the share of lowercase letters in each response."""
    return torch.tensor([sum(c.islower() for c in t) / max(1, len(t)) for t in texts])


def test_ppo_raises_a_toy_reward_with_bounded_kl(pairs, char_policy, tmp_path):
    """A character-level policy rewarded for the share of lowercase letters it writes."""
    policy = char_policy
    out = tmp_path / "out"
    cfg = config("ppo", pairs, str(policy), out, max_steps=30, rollout_batch_size=8, mini_batch_size=4, max_new_tokens=8, lr=2e-3,
                 kl_coef=0.02, eval_split=0.25, eval_steps=10)
    results = PPOTrainer(cfg, reward_fn=lowercase_share).train()
    rows = [r for r in metrics(out) if "score" in r]
    evals = [r for r in metrics(out) if "eval/score" in r]
    assert [r["step"] for r in evals] == [10, 20, 30] and evals[-1] == {"step": 30, **results}
    assert len({r["eval/reference_score"] for r in evals}) == 1  # the reference is scored once
    first, last = sum(r["score"] for r in rows[:5]) / 5, sum(r["score"] for r in rows[-5:]) / 5
    assert last > first + 0.1, (first, last)
    assert max(abs(r["kl"]) for r in rows) < 10 and rows[-1]["entropy"] < rows[0]["entropy"]
    assert {"clipfrac", "value_loss", "policy_loss", "response_length"} <= set(rows[-1])
    assert results["eval/score"] > results["eval/reference_score"] + 0.1, results  # on 6 held-out prompts
    assert json.loads((out / "eval_results.json").read_text()) == results
    assert (out / "value_head.pt").exists() and AutoModelForCausalLM.from_pretrained(out)


def test_ppo_with_a_reward_model_judge_on_another_tokenizer(tiny, pairs, tmp_path):
    """The policy uses the SmolLM tokenizer; the reward model, given as the judge config that
    labels with it, reads text with its own."""
    rm_tok = char_tokenizer()
    rm_dir = tmp_path / "char-rm"
    torch.manual_seed(1)
    LlamaForSequenceClassification(tiny_config(len(rm_tok), rm_tok, num_labels=1)).save_pretrained(rm_dir)
    rm_tok.save_pretrained(rm_dir)
    judge = tmp_path / "rm-judge.toml"
    judge.write_text(f'backend = "reward_model"\nmodel = "{rm_dir}"\n')
    train(config("ppo", pairs, tiny, tmp_path / "out", max_steps=2, reward_model=str(judge), max_new_tokens=6, rollout_batch_size=4))
    rows = metrics(tmp_path / "out")
    assert len(rows) == 2 and all(isinstance(r["score"], float) for r in rows)
    with pytest.raises(ConfigError, match="needs backend 'reward_model'"):
        train(config("ppo", pairs, tiny, tmp_path / "out2", max_steps=2, reward_model="embedded", max_new_tokens=6, rollout_batch_size=4))


@pytest.mark.parametrize("method", ["sft", "rm", "dpo", "ppo"])
def test_long_prompts_keep_their_end_by_default_and_are_counted(tiny, tmp_path, capsys, method):
    rows = [{"prompt": ("word " * 300 if i % 3 == 0 else "short") + f" {i}?", "chosen": "yes", "rejected": "no"} for i in range(8)]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    extra = {"reward_model": None, "max_new_tokens": 4} if method == "ppo" else {}
    trainer = trainer_for(config(method, str(data), tiny, tmp_path / method, max_steps=1, max_length=64, **extra),
                          **({"reward_fn": lambda prompts, texts: torch.zeros(len(texts))} if method == "ppo" else {}))
    trainer.train()
    assert json.loads((tmp_path / method / "train_config.json").read_text())["truncated_rows"] == 3  # rows 0, 3 and 6
    assert "3 of 8 rows are longer than --max-length 64" in capsys.readouterr().out


def test_truncated_prompt_leaves_the_response_whole():
    tok = char_tokenizer()
    response = "r" * 20
    kept = encode(tok, "p" * 50 + "END", response, 50, "x.jsonl:1", truncate=True)
    ids = kept["input_ids"]
    assert ids[-21:] == tok(response)["input_ids"] + [tok.eos_token_id]
    assert tok.decode(ids[:-21]).replace(" ", "").endswith("END<unk><unk>Assistant:")  # the prompt's end, then the transcript's reply turn
    assert len(ids) == 50 and kept["labels"].count(-100) == 50 - 21
    long_response = encode(tok, "p" * 50, "r" * 100, 40, "x.jsonl:1", truncate=True)
    assert long_response["labels"].count(-100) == 20  # the response gets at most half


def test_a_pairs_prompt_is_cut_once_for_both_responses():
    from rlaif.models.packing import common_prefix_length
    from rlaif.trainers.pairs import TrainPair, encode_pair

    tok = char_tokenizer()
    chosen, rejected, *_ = encode_pair(tok, TrainPair("p" * 50 + "END", "c" * 20, "r" * 5, 1.0, "x.jsonl:1"), 50, truncate=True)
    shared = common_prefix_length(chosen["input_ids"], rejected["input_ids"])
    assert chosen["labels"].count(-100) == rejected["labels"].count(-100) == shared == 50 - 21  # the same prompt tokens, all of them
    assert len(chosen["input_ids"]) == 50 and chosen["input_ids"][-21:] == tok("c" * 20)["input_ids"] + [tok.eos_token_id]
    assert len(rejected["input_ids"]) == shared + 6  # the shorter response reads the same context


def test_learning_rate_schedule():
    linear = [lr_factor(s, 2, 6, "linear") for s in range(6)]
    assert linear == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])
    assert [lr_factor(s, 2, 6, "constant") for s in range(6)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])
    assert lr_factor(0, 0, 1, "linear") == 1.0


def test_every_setting_is_an_option_with_the_fields_default_and_choices(monkeypatch):
    from dataclasses import MISSING, fields

    from click.testing import CliRunner

    import rlaif.trainers
    from rlaif.cli import main
    from rlaif.cli import train as train_command

    params = {p.name: p for p in train_command.params}
    for f in fields(TrainConfig):
        if f.name == "progress":
            assert "progress" not in params  # --quiet
            continue
        assert params[f.name].default == (None if f.default is MISSING else f.default), f.name
        assert tuple(getattr(params[f.name].type, "choices", ())) == (f.metadata.get("choices") or ()), f.name

    seen = {}

    def fake_train(config):
        seen["config"] = config
        return {}

    monkeypatch.setattr(rlaif.trainers, "train", fake_train)
    args = ["train", "--method", "ppo", "--data", "x.jsonl", "--gamma", "0.9", "--lam", "0.5", "--cliprange", "0.3",
            "--cliprange-value", "0.4", "--vf-coef", "0.2", "--max-grad-norm", "0.5", "--log-steps", "2",
            "--target-kl", "0.1", "--temperature", "0.7", "--no-truncate-prompt"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    c = seen["config"]
    assert (c.gamma, c.lam, c.cliprange, c.cliprange_value, c.vf_coef, c.max_grad_norm, c.log_steps, c.target_kl,
            c.temperature) == (0.9, 0.5, 0.3, 0.4, 0.2, 0.5, 2, 0.1, 0.7)
    assert c.truncate_prompt is False and c.output == "outputs/ppo" and c.epochs == 1


def test_ppo_logs_cleanrl_diagnostics_every_log_steps_and_stops_early_at_target_kl(pairs, char_policy, tmp_path):
    policy = char_policy

    def run(name, **kw):
        PPOTrainer(config("ppo", pairs, str(policy), tmp_path / name, max_steps=4, rollout_batch_size=8, mini_batch_size=4,
                          max_new_tokens=6, lr=2e-3, **kw), reward_fn=lowercase_share).train()
        return metrics(tmp_path / name)

    full = run("full", log_steps=2)
    assert [r["step"] for r in full] == [2, 4]
    assert {"approx_kl", "explained_variance", "score_std", "entropy", "clipfrac", "updates"} <= set(full[0])
    assert all(r["updates"] == 4 * 2 for r in full)  # 4 PPO epochs of 2 minibatches
    assert all(r["approx_kl"] >= 0 and r["score_std"] > 0 for r in full)
    early = run("early", target_kl=0.0)  # any move passes it: one epoch per rollout
    assert all(r["updates"] == 2 for r in early)


def test_bf16_dpo_starts_at_log_2(tiny, pairs, tmp_path):
    """The reference log-probabilities are computed in the policy's precision, so h = 0 at the first step."""
    import math

    train(config("dpo", pairs, tiny, tmp_path, max_steps=1, bf16=True, batch_size=8))
    assert metrics(tmp_path)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # 6e-5 off with a float32 reference


def test_a_model_without_chat_template_reads_prompts_as_a_transcript(pairs, char_policy, tmp_path):
    from rlaif.inputs import Example
    from rlaif.judging.generation import generate_responses
    from rlaif.models.loading import chat_prompt
    from rlaif.storage.cache import AnswerCache

    tok = char_tokenizer()
    assert tok.chat_template is None
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat_prompt(tok, conversation) == "System: Be brief.\n\nUser: Hi\n\nAssistant:"
    assert chat_prompt(tok, "Hi") == "User: Hi\n\nAssistant:"
    model = char_policy
    examples = [Example("q1", "Hi"), Example("q2", conversation)]
    cache = AnswerCache(tmp_path / "cache.sqlite")
    generate_responses(examples, str(model), num_responses=2, max_new_tokens=5, cache=cache)
    assert all(len(ex.responses) == 2 and all(isinstance(r, str) for r in ex.responses) for ex in examples)
    assert len(cache) == 2  # an empty cache is still a cache: both prompts' samples are kept
    train(config("sft", pairs, str(model), tmp_path / "sft", max_steps=1))  # and trains on the same text
