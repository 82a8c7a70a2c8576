"""`TrainConfig`: every setting of `rlaif train`, from the command line or a TOML/YAML file."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from rlaif.data import InputError

METHODS = ("sft", "rm", "dpo", "ppo")
CHOICES = {"method": METHODS, "loss": ("sigmoid", "ipo"), "lr_scheduler": ("linear", "constant")}


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
        for name, allowed in CHOICES.items():
            if (problem := _choice_problem(getattr(self, name), allowed)) is not None:
                raise ValueError(f"{name}: {problem}")
        if not 0.0 <= self.eval_split < 1.0:
            raise ValueError(f"eval_split must be in [0, 1), got {self.eval_split}")


def _choice_problem(value: Any, allowed: tuple[str, ...]) -> str | None:
    return None if value in allowed else f"expected one of {', '.join(allowed)}, got {value!r}"


def _types(hint: Any) -> tuple[Any, ...]:
    """The types an annotation allows: `int | None` -> (int, NoneType)."""
    return get_args(hint) or (hint,)


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit the annotation `hint` (an int is a fine float), or None."""
    options = _types(hint)
    if value is None:
        fits = type(None) in options
    elif isinstance(value, bool):
        fits = bool in options
    elif isinstance(value, int) and float in options:
        fits = True
    else:
        fits = isinstance(value, tuple(o for o in options if o is not type(None)))
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    return None if fits else f"expected {names}, got {value!r}"


def _yaml_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _line_of(text: str, key: str) -> int:
    """The line that sets `key` in a TOML/YAML file (0 if not found)."""
    pattern = re.compile(rf"\s*['\"]?{re.escape(key)}['\"]?\s*[=:]")
    return next((i for i, line in enumerate(text.splitlines(), 1) if pattern.match(line)), 0)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or YAML file; an unknown key or a bad value is an error naming file, line and key."""
    path = Path(path)
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(str(path), 1, None, f"expected a table of settings, got {type(data).__name__}")
    hints = get_type_hints(TrainConfig)
    settings = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in hints:
            problem = "unknown key"
        elif name in CHOICES:
            problem = _choice_problem(value, CHOICES[name])
        else:
            if isinstance(value, str) and float in _types(hints[name]):
                value = _yaml_float(value)  # PyYAML reads `1e-5` (no dot) as a string
            problem = _type_problem(value, hints[name])
        if problem is not None:
            raise InputError(str(path), _line_of(text, key), key, problem)
        settings[name] = value
    return settings
