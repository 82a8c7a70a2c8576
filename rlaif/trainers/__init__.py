"""The bundled trainers, one module per method (the table in `methods`: sft, rm, dpo, simpo,
orpo, kto, ppo, grpo), in plain torch on transformers models. `train(TrainConfig(...))` runs one."""

from __future__ import annotations

from rlaif.trainers.config import TrainConfig, read_config_file, read_run_config
from rlaif.trainers.methods import METHODS, trainer_class


def trainer_for(config: TrainConfig, **kwargs):
    """The trainer object for `config.method` (its module imported only when asked for)."""
    return trainer_class(config.method)(config, **kwargs)


def train(config: TrainConfig, **kwargs) -> dict[str, float]:
    """Train as `config` says; returns the held-out metrics (empty without held-out data)."""
    return trainer_for(config, **kwargs).train()


__all__ = ["METHODS", "TrainConfig", "read_config_file", "read_run_config", "train", "trainer_for"]
