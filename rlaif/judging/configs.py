"""Judge config files (`judges/*.toml|yaml`): finding one by name or path, reading it, and
the backend class it names."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import yaml

from rlaif.errors import ConfigError
from rlaif.judging.base import MODES, Judge, JudgeConfig, JudgeConfigError
from rlaif.settings import read_text, unknown_key
from rlaif.storage.resources import builtin_dir, builtin_or_path

BACKENDS = {
    "local": "rlaif.judging.backends.local:LocalJudge",
    "reward_model": "rlaif.judging.backends.reward_model:RewardModelJudge",
    "openai": "rlaif.judging.backends.openai_api:OpenAIJudge",
    "anthropic": "rlaif.judging.backends.anthropic_api:AnthropicJudge",
    "vllm": "rlaif.judging.backends.vllm_offline:VLLMJudge",
    "llama_cpp": "rlaif.judging.backends.llama_cpp_local:LlamaCppJudge",
}
JURY = "jury"  # a panel of the judges above: rlaif/judging/jury.py
DEFAULT_JUDGE = "embedded"
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
KEYS = ("backend", "model", "options", "rubric", "mode", "calibration")
def resolve_judge_path(name_or_path: str | Path) -> Path:
    """A judge config file: a path as given, else a built-in name in `judges/`."""
    path, known = builtin_or_path(name_or_path, "judges", CONFIG_SUFFIXES)
    if path is not None:
        return path
    raise JudgeConfigError(f"{name_or_path}: no such judge config file or built-in name (built in: {', '.join(known)})")


def load_judge_config(name_or_path: str | Path) -> JudgeConfig:
    path = resolve_judge_path(name_or_path)
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(read_text(path))
        else:
            data = yaml.safe_load(read_text(path)) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise JudgeConfigError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise JudgeConfigError(f"{path}: expected a table of settings")
    for key in data:
        if key not in KEYS:
            raise JudgeConfigError(f"{path}: key {key!r}: {unknown_key(key, list(KEYS))} (a judge config has 'backend', "
                                   "'model', an 'options' table, optionally the 'rubric' and 'mode' a run uses "
                                   "when it names none, and 'calibration', which `rlaif calibrate` fits)")
    backend = data.get("backend")
    if not isinstance(backend, str) or backend not in (*BACKENDS, JURY):
        raise JudgeConfigError(f"{path}: key 'backend': expected one of {', '.join((*BACKENDS, JURY))}, got {backend!r}")
    if data.get("model") is not None and not isinstance(data["model"], str):
        raise JudgeConfigError(f"{path}: key 'model': expected a model name or directory, got {data['model']!r}")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise JudgeConfigError(f"{path}: key 'options': expected a table")
    calibration = data.get("calibration", 1.0)
    if isinstance(calibration, bool) or not isinstance(calibration, int | float) or not calibration > 0:
        raise JudgeConfigError(f"{path}: key 'calibration': expected a temperature above 0 (from `rlaif calibrate`), got {calibration!r}")
    rubric, mode = data.get("rubric"), data.get("mode")
    if rubric is not None and (not isinstance(rubric, str) or not rubric.strip()):
        raise JudgeConfigError(f"{path}: key 'rubric': expected a built-in rubric name or a template path, got {rubric!r}")
    if mode is not None and mode not in MODES:
        raise JudgeConfigError(f"{path}: key 'mode': expected one of {', '.join(MODES)}, got {mode!r}")
    name = path.stem if path.parent == builtin_dir("judges") else str(path)
    return JudgeConfig(name, backend, data.get("model"), dict(options), str(path), float(calibration), rubric, mode)


def judge_class(config: JudgeConfig) -> type[Judge]:
    """The backend class for a config (imported only when asked for)."""
    if config.backend == JURY:
        raise JudgeConfigError(f"{config.source or config.name}: a jury is a panel of judges, not one backend: "
                               "use it as `--judge` of label, compare or GRPO")
    module_name, class_name = BACKENDS[config.backend].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_judge(name_or_path: str | Path | JudgeConfig = DEFAULT_JUDGE) -> Judge:
    """Build a judge from a built-in name, a config file, or a `JudgeConfig`."""
    config = name_or_path if isinstance(name_or_path, JudgeConfig) else load_judge_config(name_or_path)
    return judge_class(config)(config)


def reward_model_dir(name_or_path: str) -> str:
    """A reward model directory as given, or the one a `reward_model` judge config names (so the
    judge that labeled the data can also be PPO's reward)."""
    if Path(name_or_path).is_dir():
        return name_or_path
    config = load_judge_config(name_or_path)
    if config.backend != "reward_model" or not config.model:
        raise ConfigError(f"{config.source}: a judge config used as a reward model needs backend 'reward_model' "
                          f"and a model, not {config.backend!r}")
    return config.model
