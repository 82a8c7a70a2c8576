"""The bundled trainers: `sft`, `rm` (reward model), `dpo`, `ppo` and `grpo`, in plain torch on
transformers models. `train(TrainConfig(...))` runs one."""

from __future__ import annotations

from rlaif.trainers.config import METHODS, TrainConfig, read_config_file, read_run_config


def trainer_for(config: TrainConfig, **kwargs):
    """The trainer object for `config.method` (imported only when asked for)."""
    if config.method == "sft":
        from rlaif.trainers.sft import SFTTrainer as cls
    elif config.method == "rm":
        from rlaif.trainers.reward import RewardTrainer as cls
    elif config.method == "dpo":
        from rlaif.trainers.dpo import DPOTrainer as cls
    elif config.method == "ppo":
        from rlaif.trainers.ppo import PPOTrainer as cls
    else:
        from rlaif.trainers.grpo import GRPOTrainer as cls
    return cls(config, **kwargs)


def train(config: TrainConfig, **kwargs) -> dict[str, float]:
    """Train as `config` says; returns the held-out metrics (empty without held-out data)."""
    return trainer_for(config, **kwargs).train()


__all__ = ["METHODS", "TrainConfig", "read_config_file", "read_run_config", "train", "trainer_for"]
