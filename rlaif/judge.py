"""The judge interface every backend implements, and judge configs (`judges/*.toml|yaml`).

A judge receives requests and returns, for each, a `Verdict`. Pairwise, a request is a
rubric rendered with two responses and the verdict is the probability that the one shown
first is better. Pointwise, a request is one response (a rubric rendered with it, or the
prompt and response as they are for a reward model) and the verdict is its score. Backends
differ in how they get it (token log-probabilities, sampled text, a reward head); the
labeling run does not care.
"""

from __future__ import annotations

import importlib
import math
import re
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rlaif.data import Prompt
from rlaif.errors import ConfigError, UserError
from rlaif.resources import builtin_dir

BACKENDS = {
    "local": "rlaif.backends.local:LocalJudge",
    "reward_model": "rlaif.backends.reward_model:RewardModelJudge",
    "openai": "rlaif.backends.openai_api:OpenAIJudge",
    "anthropic": "rlaif.backends.anthropic_api:AnthropicJudge",
    "vllm": "rlaif.backends.vllm_offline:VLLMJudge",
    "llama_cpp": "rlaif.backends.llama_cpp_local:LlamaCppJudge",
}
DEFAULT_JUDGE = "embedded"
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
MODES = ("pairwise", "pointwise")


@dataclass(frozen=True)
class JudgeRequest:
    """One question to a judge: a rendered rubric and how its verdict is written.

    Pairwise, `labels` name the first and the second response; pointwise, they are the
    rating scale (numbers, worst first). A judge that reads no rubric (a reward model) gets
    an empty `prompt` and the `query` and `response` as they are.
    """

    prompt: str
    labels: tuple[str, ...] = ("1", "2")
    verdict_prefix: str = "Preferred Response="
    cot: bool = False
    pointwise: bool = False
    query: Prompt | None = None
    response: str | None = None


@dataclass
class Verdict:
    """A judge's answer to one request.

    Pairwise, `p_first` is P(first response better); pointwise, `score` is the response's
    score (the expected rating where label probabilities are known). Both are None when no
    verdict could be read (then `error` says why). `soft` is False for a verdict parsed from
    text (a hard label).
    """

    p_first: float | None
    text: str | None = None
    soft: bool = True
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    transient: bool = False  # a failure worth asking again next run (never cached)
    score: float | None = None

    @property
    def value(self) -> float | None:
        """What the verdict says: `p_first` of a pairwise answer, `score` of a pointwise one."""
        return self.score if self.p_first is None else self.p_first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class JudgeConfigError(ConfigError):
    """A judge config that cannot be used, naming its file and key."""


class JudgeFatalError(UserError):
    """A judge error that retrying cannot fix (a bad key, a bad request): the run stops."""


@dataclass
class JudgeConfig:
    """What a `judges/*.toml` file holds: a backend, a model and backend options."""

    name: str
    backend: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def public(self) -> dict[str, Any]:
        """The config as written to manifests (it holds names of key variables, never keys)."""
        return {"name": self.name, "backend": self.backend, "model": self.model, "options": self.options, "source": self.source}


def resolve_judge_path(name_or_path: str | Path) -> Path:
    """A judge config file: a path as given, else a built-in name in `judges/`."""
    path = Path(name_or_path)
    if path.suffix and path.exists():
        return path.resolve()
    for suffix in CONFIG_SUFFIXES:
        builtin = builtin_dir("judges") / f"{name_or_path}{suffix}"
        if builtin.exists():
            return builtin
    known = sorted(p.stem for p in builtin_dir("judges").iterdir() if p.suffix in CONFIG_SUFFIXES)
    raise JudgeConfigError(f"{name_or_path}: no such judge config file or built-in name (built in: {', '.join(known)})")


def load_judge_config(name_or_path: str | Path) -> JudgeConfig:
    path = resolve_judge_path(name_or_path)
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        else:
            data = yaml.safe_load(path.read_text()) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise JudgeConfigError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise JudgeConfigError(f"{path}: expected a table of settings")
    unknown = set(data) - {"backend", "model", "options"}
    if unknown:
        raise JudgeConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}: a judge config has 'backend', 'model' and an 'options' table")
    backend = data.get("backend")
    if backend not in BACKENDS:
        raise JudgeConfigError(f"{path}: key 'backend': expected one of {', '.join(BACKENDS)}, got {backend!r}")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise JudgeConfigError(f"{path}: key 'options': expected a table")
    name = path.stem if path.parent == builtin_dir("judges") else str(path)
    return JudgeConfig(name, backend, data.get("model"), dict(options), str(path))


class Judge(ABC):
    """Base of every judge backend. Subclasses declare their options as a dataclass, which of
    them do not change answers (`NOT_IN_KEY`: batch sizes, devices, rate limits), the modes
    they answer (the first is their default), whether they read a rendered rubric and the ways
    they can read a verdict."""

    Options: type = object
    NOT_IN_KEY: frozenset[str] = frozenset()
    MODES: tuple[str, ...] = MODES
    READS_RUBRIC = True
    VERDICTS: tuple[str, ...] = ()  # the ways of reading a verdict its `verdict` option offers, if it has one

    def __init__(self, config: JudgeConfig):
        self.config = config
        self.options = self.parse_options(config)

    @classmethod
    def parse_options(cls, config: JudgeConfig) -> Any:
        try:
            return cls.Options(**config.options)
        except TypeError as e:
            known = ", ".join(f.name for f in fields(cls.Options))
            raise JudgeConfigError(f"{config.source or config.name}: bad 'options' ({e}); {config.backend} takes: {known}") from None
        except ValueError as e:  # an option's value, checked by the options themselves
            raise JudgeConfigError(f"{config.source or config.name}: {e}") from None

    @classmethod
    def identity(cls, config: JudgeConfig) -> dict[str, Any]:
        """What determines an answer besides the prompt: the cache key's other half."""
        options = {k: v for k, v in asdict(cls.parse_options(config)).items() if k not in cls.NOT_IN_KEY}
        return {"backend": config.backend, "model": config.model, "options": options}

    @classmethod
    def score_temperature(cls, options: Any) -> float:
        """T in P(A ≻ B) = σ((s_A − s_B) / T), which turns two pointwise scores into a preference."""
        return 1.0

    @classmethod
    def completion_budget(cls, options: Any, cot: bool) -> int:
        """The most tokens one answer may generate (for dry-run estimates)."""
        return 0

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    def judge(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        """Answer every request, calling `on_result(index, verdict)` as each answer arrives."""

    @staticmethod
    def from_label_probs(request: JudgeRequest, probs: Sequence[float], **details: Any) -> Verdict:
        """The verdict a distribution over the request's labels gives (normalised here): P(first)
        for a pair, the expected rating Σ p(label) · label for one response."""
        total = sum(probs)
        probs = [p / total for p in probs]
        if request.pointwise:
            return Verdict(p_first=None, score=sum(p * float(label) for p, label in zip(probs, request.labels)), **details)
        return Verdict(p_first=probs[0], **details)

    def close(self) -> None:
        """Release what the judge holds (models, connections)."""


class BatchJudge(Judge):
    """A judge whose service also answers a whole file of requests later, at a discount
    (OpenAI's Batch API): `rlaif label --batch-api` submits, and collects on a later run."""

    @abstractmethod
    def submit_batch(self, requests: dict[str, JudgeRequest], tag: str) -> dict[str, Any]:
        """Start a batch of `requests` (keyed by cache key) labelled `tag`; returns its state to persist (`batch_id`, `status`, ...)."""

    @abstractmethod
    def find_batch(self, tag: str, since: float) -> dict[str, Any] | None:
        """The state of the batch labelled `tag`, created after `since` (Unix time), or None."""

    @abstractmethod
    def poll_batch(self, batch_id: str, requests: dict[str, JudgeRequest]) -> tuple[str, dict[str, Verdict]]:
        """The batch's status and, once it has ended, the verdicts it holds by key."""


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for rate limits and dry runs."""
    return max(1, math.ceil(len(text) / 4))


def estimate_cost(options: dict[str, Any], prompt_tokens: int, completion_tokens: int) -> float | None:
    """Cost from the judge config's per-million-token prices, or None where it names none."""
    p_in, p_out = options.get("price_input_per_mtok"), options.get("price_output_per_mtok")
    if p_in is None and p_out is None:
        return None
    return (prompt_tokens * (p_in or 0) + completion_tokens * (p_out or 0)) / 1e6


def choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ValueError naming `key` when `value` is not one of `choices` (for options' checks)."""
    if value not in choices:
        raise ValueError(f"key 'options.{key}': expected one of {', '.join(map(str, choices))}, got {value!r}")


def judge_class(config: JudgeConfig) -> type[Judge]:
    """The backend class for a config (imported only when asked for)."""
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
        raise ConfigError(f"{config.source}: a judge config used as a reward model needs backend 'reward_model' and a model, not {config.backend!r}")
    return config.model


def find_verdict(text: str, labels: Sequence[str], verdict_prefix: str) -> tuple[int, int] | None:
    """Which label a judge's text chose and where in the text it stands, or None if it cannot be read.

    The last `verdict_prefix` followed by a label wins; a reply that is just a label counts too.
    """
    alternatives = "|".join(re.escape(label) for label in labels)
    found = list(re.finditer(rf"{re.escape(verdict_prefix.strip())}\s*\**\s*({alternatives})(?![\w])", text))
    if not found:
        found = [m for m in [re.fullmatch(rf"\W*({alternatives})\W*", text)] if m]
    if not found:
        return None
    return list(labels).index(found[-1].group(1)), found[-1].start(1)


def parse_verdict(text: str, labels: Sequence[str], verdict_prefix: str) -> int | None:
    """Which label (its index) a judge's text chose, or None if it cannot be read."""
    found = find_verdict(text, labels, verdict_prefix)
    return None if found is None else found[0]


def top_at(tokens: Sequence[tuple[str, dict[str, float]]], offset: int) -> dict[str, float] | None:
    """The top log-probabilities of the reply's token that holds character `offset` (where the
    verdict stands), from the reply's (token, {candidate: logprob}) in order; None if there are none."""
    seen = 0
    for token, top in tokens:
        if seen + len(token) > offset:
            return top or None
        seen += len(token)
    return None


def label_probs(top: dict[str, float], labels: Sequence[str]) -> list[float]:
    """The labels' probabilities among a token's top log-probabilities.

    A candidate spells a label when it is the label with at most spaces, quotes, braces or a
    comma around it (a JSON value's token may carry its quote); the mass of every candidate
    that spells it is summed. A label missing from the list is given the smallest listed
    probability: an upper bound on its true mass.
    """
    mass = dict.fromkeys(labels, 0.0)
    for candidate, logprob in top.items():
        spelled = candidate.strip(' "{},')
        if spelled in mass:
            mass[spelled] += math.exp(logprob)
    floor = math.exp(min(top.values()))
    return [mass[label] or floor for label in labels]
