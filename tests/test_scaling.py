"""Training bigger models: LoRA adapters (peft), FSDP against DDP, bf16 and gradient
checkpointing on every method."""

import math
import os
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlaif.errors import ConfigError
from rlaif.models.loading import load_causal_lm, resolve_model
from rlaif.trainers import train
from rlaif.trainers.grpo import GRPOTrainer
from rlaif.trainers.ppo import PPOTrainer
from tests.test_trainers import config, lowercase_share, metrics, pairs  # noqa: F401 - `pairs` is a fixture

IDS = torch.tensor([[1, 520, 2431, 314, 253, 1835, 30]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


# peft's own read, in this test's loading of the adapter
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_dpo_on_the_embedded_model_starts_at_log_2_and_saves_an_adapter_peft_loads(pairs, tmp_path):  # noqa: F811
    train(config("dpo", pairs, None, tmp_path, max_steps=3, lr=1e-3, lora_r=8, gradient_checkpointing=True))
    rows = metrics(tmp_path)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # the reference is the policy with its adapter off
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (tmp_path / "adapter_config.json").exists() and not (tmp_path / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(resolve_model(None))
    before = logits(base)
    adapted = PeftModel.from_pretrained(base, tmp_path)
    assert not torch.allclose(logits(adapted), before, atol=1e-4)  # the adapter trained
    with adapted.disable_adapter():
        assert torch.allclose(logits(adapted), before, atol=1e-5)
    assert torch.allclose(logits(load_causal_lm(str(tmp_path))), logits(adapted), atol=1e-5)  # rlaif (compare, labeling) loads it too


ONLINE = {"ppo": PPOTrainer, "grpo": GRPOTrainer}


def online_settings(method: str, **kw) -> dict:
    """Small rollouts for ppo and grpo (their settings are an error for the other methods)."""
    if method not in ONLINE:
        return {}
    return {"max_new_tokens": 6, "rollout_batch_size": 4, "mini_batch_size": 2, **({"group_size": 2} if method == "grpo" else {}), **kw}


@pytest.mark.parametrize("method", ["sft", "rm", "ppo", "grpo"])
# peft's own read, in this test's loading of the adapter
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_trains_every_method_and_the_adapter_loads(tiny, pairs, tmp_path, method):  # noqa: F811
    # grpo: one update per step, so the first step's KL is the first update's
    cfg = config(method, pairs, tiny, tmp_path, max_steps=4, lr=3e-2, lora_r=4, lora_alpha=8, lora_target="q_proj,v_proj",
                 **online_settings(method, mini_batch_size=8 if method == "grpo" else 2, **({"ppo_epochs": 1} if method == "grpo" else {})))
    if method in ONLINE:
        ONLINE[method](cfg, reward_fn=lowercase_share).train()
    else:
        train(cfg)
    rows = metrics(tmp_path)
    assert (tmp_path / "adapter_config.json").exists() and not (tmp_path / "model.safetensors").exists()
    if method in ONLINE:
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout's policy is the reference (the adapter off)
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), tmp_path)
    else:
        assert rows[-1]["loss"] < rows[0]["loss"]
        auto = AutoModelForSequenceClassification if method == "rm" else AutoModelForCausalLM
        loaded = PeftModel.from_pretrained(auto.from_pretrained(tiny, num_labels=1) if method == "rm"
                                           else auto.from_pretrained(tiny), tmp_path)
    names = {n for n, _ in loaded.named_parameters() if "lora_" in n}
    assert names and all(("q_proj" in n or "v_proj" in n) for n in names)


def test_lora_resume_continues_the_same_adapter(tiny, pairs, tmp_path):  # noqa: F811
    same = {"save_steps": 2, "lr_scheduler": "constant", "lora_r": 4}
    train(config("dpo", pairs, tiny, tmp_path / "whole", max_steps=4, **same))
    train(config("dpo", pairs, tiny, tmp_path / "parts", max_steps=2, **same))
    train(config("dpo", pairs, tiny, tmp_path / "parts", max_steps=4, resume=True, **same))
    assert [r["loss"] for r in metrics(tmp_path / "parts")] == pytest.approx([r["loss"] for r in metrics(tmp_path / "whole")], rel=1e-5)


def test_lora_and_fsdp_settings_are_checked(tiny, pairs, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="key 'lora_r'.*without --train-layers"):
        config("dpo", pairs, tiny, tmp_path, lora_r=4, train_layers=1)
    with pytest.raises(ConfigError, match="key 'fsdp'"):
        config("ppo", pairs, tiny, tmp_path, fsdp=True)


def _torchrun(tmp_path, name: str, *args: str) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rlaif.cli", "train", *args,
           "--output", str(tmp_path / name), "--quiet"]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return metrics(tmp_path / name)


@pytest.mark.parametrize("method", ["sft", "rm", "dpo"])
def test_fsdp_matches_ddp_on_two_cpu_processes(tiny, pairs, tmp_path, method):  # noqa: F811
    common = ["--method", method, "--data", pairs, "--model", tiny, "--max-steps", "3", "--batch-size", "2", "--lr", "1e-3"]
    ddp, fsdp = _torchrun(tmp_path, "ddp", *common), _torchrun(tmp_path, "fsdp", *common, "--fsdp")
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in fsdp] == pytest.approx([r[key] for r in ddp], rel=1e-4, abs=1e-6)
    auto = AutoModelForSequenceClassification if method == "rm" else AutoModelForCausalLM
    a, b = auto.from_pretrained(tmp_path / "ddp").state_dict(), auto.from_pretrained(tmp_path / "fsdp").state_dict()
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # the shards gathered on saving


def test_fsdp_resume_continues_to_the_same_result(tiny, pairs, tmp_path):  # noqa: F811
    common = ["--method", "sft", "--data", pairs, "--model", tiny, "--batch-size", "2", "--save-steps", "2",
              "--lr-scheduler", "constant", "--fsdp"]
    whole = _torchrun(tmp_path, "whole", *common, "--max-steps", "4")
    _torchrun(tmp_path, "parts", *common, "--max-steps", "2")
    parts = _torchrun(tmp_path, "parts", *common, "--max-steps", "4", "--resume")
    assert [r["loss"] for r in parts] == pytest.approx([r["loss"] for r in whole], rel=1e-5)


def _run(method, pairs, tiny, out, **kw) -> list[dict]:  # noqa: F811
    cfg = config(method, pairs, tiny, out, max_steps=3, **online_settings(method), **kw)
    if method in ONLINE:
        ONLINE[method](cfg, reward_fn=lowercase_share).train()
    else:
        train(cfg)
    return metrics(out)


@pytest.mark.parametrize("method", ["sft", "rm", "dpo", "ppo", "grpo"])
def test_gradient_checkpointing_changes_nothing_but_memory(tiny, pairs, tmp_path, method):  # noqa: F811
    plain = _run(method, pairs, tiny, tmp_path / "plain")
    checkpointed = _run(method, pairs, tiny, tmp_path / "checkpointed", gradient_checkpointing=True)
    key = "policy_loss" if method in ONLINE else "loss"
    assert [r[key] for r in checkpointed] == pytest.approx([r[key] for r in plain], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("method", ["sft", "rm", "dpo", "ppo"])
def test_bf16_trains_close_to_float32(tiny, pairs, tmp_path, method):  # noqa: F811
    full = _run(method, pairs, tiny, tmp_path / "fp32")
    half = _run(method, pairs, tiny, tmp_path / "bf16", bf16=True, gradient_checkpointing=True)
    if method == "ppo":  # bf16 samples other responses: compare what holds for any sample
        assert half[0]["kl"] == pytest.approx(0.0, abs=1e-6) and all(math.isfinite(r["policy_loss"]) for r in half)
    else:
        assert half[0]["loss"] == pytest.approx(full[0]["loss"], rel=2e-2)
        assert all(math.isfinite(r["loss"]) for r in half) and half[-1]["loss"] < half[0]["loss"]
