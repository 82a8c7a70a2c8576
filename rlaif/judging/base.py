"""The judge interface every backend implements, and judge configs (`judges/*.toml|yaml`).

A judge receives requests and returns, for each, a `Verdict`. Pairwise, a request is a
rubric rendered with two responses and the verdict is the probability that the one shown
first is better. Pointwise, a request is one response (a rubric rendered with it, or the
prompt and response as they are for a reward model) and the verdict is its score. Backends
differ in how they get it (token log-probabilities, sampled text, a reward head); the
labeling run does not care.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_type_hints

from rlaif.errors import ConfigError, UserError
from rlaif.inputs import Prompt
from rlaif.judging.rubric import DEFAULT_LABELS, DEFAULT_VERDICT_PREFIX
from rlaif.settings import type_problem, unknown_key

MODES = ("pairwise", "pointwise")
MODE_HELP = ("pairwise: the two responses side by side (debiased over orders); pointwise: each response scored alone, "
             "so no position bias [default: the judge config's `mode`, else the judge's own: pairwise, a reward model's pointwise].")


@dataclass(frozen=True)
class JudgeRequest:
    """One question to a judge: a rendered rubric and how its verdict is written.

    Pairwise, `labels` name the first and the second response; pointwise, they are the
    rating scale (numbers, worst first). A judge that reads no rubric (a reward model) gets
    an empty `prompt` and the `query` and `response` as they are.
    """

    prompt: str
    labels: tuple[str, ...] = DEFAULT_LABELS
    verdict_prefix: str = DEFAULT_VERDICT_PREFIX
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
    too_long: bool = False  # not asked: the request is longer than the judge can read

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
    """What a `judges/*.toml` file holds: a backend, a model, backend options, the rubric and
    mode a run uses when it names none (so `--judge NAME` alone is a labeling setup) and, fitted
    by `rlaif calibrate`, a calibration temperature for the judge's preferences."""

    name: str
    backend: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    calibration: float = 1.0  # T_c in P'(A ≻ B) = σ(logit P(A ≻ B) / T_c); 1 leaves the judge's own
    rubric: str | None = None
    mode: str | None = None

    def public(self) -> dict[str, Any]:
        """The config as written to manifests (it holds names of key variables, never keys)."""
        return {"name": self.name, "backend": self.backend, "model": self.model, "options": self.options, "source": self.source,
                "calibration": self.calibration, "rubric": self.rubric, "mode": self.mode}


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
        """The config's options as the backend's `Options`, each value of its field's type."""
        hints = get_type_hints(cls.Options) if cls.Options is not object else {}
        for key, value in config.options.items():
            if hints and key not in hints:
                raise JudgeConfigError(f"{config.source or config.name}: key 'options.{key}': {unknown_key(key, list(hints))}; "
                                       f"{config.backend} takes: {', '.join(hints)}")
            if key in hints and (problem := type_problem(value, hints[key])) is not None:
                raise JudgeConfigError(f"{config.source or config.name}: key 'options.{key}': {problem}")
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


BATCH_ENDED = ("completed", "expired", "cancelled", "failed")  # a provider's batch is over: its results are all there will be


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


class SamplingJudge(Judge):
    """A judge whose model also writes responses, so a judge config can be a generator
    (`rlaif label --generator`): chat completions on an OpenAI-compatible server, vLLM's engine."""

    @abstractmethod
    def sample(self, conversations: list[list[dict[str, str]]], n: int, max_tokens: int, temperature: float, seeds: list[int],
               on_result: Callable[[int, list[str], str | None], None]) -> None:
        """`n` replies to each conversation, seeded per conversation; `on_result(index, texts,
        error)` as each conversation's replies arrive (`error` once it gave up)."""


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
