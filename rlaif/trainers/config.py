"""`TrainConfig`: every setting of `rlaif train`, from the command line or a TOML/YAML file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

METHODS = ("sft", "rm", "dpo", "ppo")


@dataclass
class TrainConfig:
    method: str
    data: str
    output: str
    model: str | None = None  # default: the embedded SmolLM2-135M-Instruct
    # the loop
    max_steps: int | None = None  # wins over `epochs`
    epochs: int = 1
    batch_size: int = 4  # per process
    grad_accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "linear"  # after warm-up: "linear" decay to 0 at the last step, or "constant"
    max_grad_norm: float = 1.0
    max_length: int = 512
    truncate_prompt: bool = False  # keep the end of a prompt that is too long, instead of stopping
    limit: int | None = None  # read at most this many rows
    seed: int = 0
    eval_data: str | None = None
    eval_split: float = 0.0  # held-out share of --data when there is no --eval-data
    eval_fold: int = 0  # which slice of that share is held out (cross-validation folds)
    eval_steps: int = 0  # also evaluate every N steps (0: at the end only)
    save_steps: int = 0  # 0: no intermediate checkpoints
    resume: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    train_layers: int | None = None  # train only the top N transformer blocks (and the head); 0: the head only
    log_steps: int = 1
    progress: bool = True
    # rm
    hard_labels: bool = False  # ignore `ai_preference`, train on hard labels
    # dpo
    beta: float = 0.1
    label_smoothing: float = 0.0
    loss: str = "sigmoid"  # or "ipo"
    # ppo
    reward_model: str | None = None
    rollout_batch_size: int = 8  # prompts per rollout (per process)
    ppo_epochs: int = 4
    mini_batch_size: int = 4
    max_new_tokens: int = 48
    temperature: float = 1.0
    kl_coef: float = 0.05
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    missing_eos_penalty: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.loss not in ("sigmoid", "ipo"):
            raise ValueError(f"unknown DPO loss {self.loss!r}: expected 'sigmoid' or 'ipo'")
        if self.lr_scheduler not in ("linear", "constant"):
            raise ValueError(f"unknown lr_scheduler {self.lr_scheduler!r}: expected 'linear' or 'constant'")
        if not 0.0 <= self.eval_split < 1.0:
            raise ValueError(f"eval_split must be in [0, 1), got {self.eval_split}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or YAML file; an unknown key is an error naming the file and key."""
    path = Path(path)
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: {e}") from None
    known = {f.name for f in fields(TrainConfig)}
    for key in data:
        if key.replace("-", "_") not in known:
            raise ValueError(f"{path}: unknown key '{key}'")
    return {k.replace("-", "_"): v for k, v in data.items()}
