"""The labeling run: input rows -> pairs -> judge calls in one or both orders -> labeled pairs.

Writes to the output directory:
- `pairs.jsonl`: prompt/chosen/rejected with `ai_preference` and the evidence;
- `failures.jsonl`: invalid rows and judgments that could not be read, with their raw text;
- `manifest.json`: configuration, rubric hash, counts, position bias, tokens, wall time;
- `cache.sqlite`: every judge answer, committed as it arrives, so a rerun or a resume
  after a kill pays for nothing twice.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlaif import __version__
from rlaif.cache import AnswerCache, cache_key
from rlaif.data import LoadResult, Pair, input_name, load_examples, make_pairs
from rlaif.debias import consistent, plan_orders, pointwise_preference, preference_for_a
from rlaif.errors import ConfigError
from rlaif.files import write_json_atomic, write_jsonl_atomic
from rlaif.generation import generate_responses
from rlaif.judge import (
    DEFAULT_JUDGE,
    MODES,
    BatchJudge,
    Judge,
    JudgeConfig,
    JudgeFatalError,
    JudgeRequest,
    Verdict,
    estimate_cost,
    estimate_tokens,
    judge_class,
    load_judge,
    load_judge_config,
)
from rlaif.rubric import Rubric, load_rubric


@dataclass
class LabelConfig:
    """Everything a labeling run depends on (the CLI's `rlaif label` options)."""

    input: str
    output: str | None = None  # default: outputs/<input name>
    rubric: str = "quality"
    judge: str = DEFAULT_JUDGE
    mode: str | None = None  # pairwise | pointwise; default: the judge's own (a reward model's is pointwise)
    cot: bool = False
    debias: str = "both"
    drop_inconsistent: bool = False
    min_confidence: float | None = None
    limit: int | None = None
    skip_invalid: bool = False
    seed: int = 0
    generator: str | None = None  # for prompt-only rows; the embedded model by default
    num_responses: int = 2
    max_new_tokens: int = 256
    temperature: float = 0.8
    cache: str | None = None  # default: <output>/cache.sqlite
    concurrency: int | None = None  # overrides the judge config's (API judges)
    batch_api: bool = False  # OpenAI Batch API: submit, then collect on a later run
    dry_run: bool = False  # count calls, tokens and cost; call nothing, write nothing
    progress: bool = True

    def output_dir(self) -> Path:
        if self.output:
            return Path(self.output)
        return Path("outputs") / input_name(self.input)


@dataclass
class LabelResult:
    """What a run did. A finished run has `manifest` (also written as manifest.json); a
    `--batch-api` run still waiting has `pending_batch` instead; `--dry-run` has `estimate`."""

    output_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    pending_batch: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None


def _as_messages(value: Any, role: str) -> list[dict[str, str]]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


@dataclass
class PairJudgment:
    """A pair's answers from the judge. Pairwise: (a_first, verdict) for each order it was shown
    in. Pointwise: (True, A's score) and (False, B's score), turned into a preference with
    temperature T."""

    answers: list[tuple[bool, Verdict]]
    pointwise: bool = False
    temperature: float = 1.0

    @property
    def failed(self) -> list[tuple[bool, Verdict]]:
        return [(flag, v) for flag, v in self.answers if v.value is None]

    @property
    def p_a(self) -> float:
        """P(A ≻ B)."""
        if self.pointwise:
            (_, a), (_, b) = self.answers
            return pointwise_preference(a.score, b.score, self.temperature)  # type: ignore[arg-type]
        return preference_for_a([(a_first, v.p_first) for a_first, v in self.answers])  # type: ignore[misc]

    @property
    def consistent(self) -> bool | None:
        """Whether both orders picked the same response; None pointwise (there is no order)."""
        return None if self.pointwise else consistent([(a_first, v.p_first) for a_first, v in self.answers])  # type: ignore[misc]


def _row(pair: Pair, judged: PairJudgment, judge: str, rubric: str, chat: bool) -> dict[str, Any]:
    p_a = judged.p_a
    a_wins = p_a >= 0.5
    chosen, rejected = (pair.a, pair.b) if a_wins else (pair.b, pair.a)
    row: dict[str, Any] = {
        "id": pair.id,
        "prompt": _as_messages(pair.prompt, "user") if chat else pair.prompt,
        "chosen": _as_messages(chosen, "assistant") if chat else chosen,
        "rejected": _as_messages(rejected, "assistant") if chat else rejected,
        "ai_preference": max(p_a, 1.0 - p_a),
        "mode": "pointwise" if judged.pointwise else "pairwise",
    }
    if judged.pointwise:  # A's score, then B's
        row["scores"] = [
            {"response": "chosen" if is_a == a_wins else "rejected", "score": v.score, "soft": v.soft, "text": v.text}
            for is_a, v in judged.answers
        ]
    else:
        row["orders"] = [
            {"first": "chosen" if a_first == a_wins else "rejected", "p_first": v.p_first, "soft": v.soft, "text": v.text}
            for a_first, v in judged.answers
        ]
    row.update(consistent=judged.consistent, judge=judge, rubric=rubric)
    if pair.human is not None:
        row["human_preference"] = pair.human if a_wins else 1.0 - pair.human
    return row


def resolve_mode(mode: str | None, backend: type[Judge], rubric: Rubric) -> str:
    """The judging mode: as asked, else the judge's own; one the judge or rubric cannot do is an error."""
    mode = mode or backend.MODES[0]
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode not in backend.MODES:
        raise ConfigError(f"a '{backend.__name__}' judge answers only in mode {', '.join(backend.MODES)}, not {mode}")
    if mode == "pointwise" and backend.READS_RUBRIC and rubric.scale is None:
        raise ConfigError(f"rubric {rubric.name} has no pointwise form (it never uses `response`): see prompts/README.md")
    return mode


def _request(pair: Pair, flag: bool, mode: str, cot: bool, rubric: Rubric, backend: type[Judge]) -> JudgeRequest:
    """The request for one order of a pair (`flag`: A shown first), or pointwise for one of
    its responses (`flag`: response A)."""
    if mode == "pairwise":
        first, second = (pair.a, pair.b) if flag else (pair.b, pair.a)
        return JudgeRequest(rubric.render(pair.prompt, first, second, cot), rubric.labels, rubric.verdict_prefix, cot)
    response = pair.a if flag else pair.b
    if not backend.READS_RUBRIC:
        return JudgeRequest("", (), "", pointwise=True, query=pair.prompt, response=response)
    return JudgeRequest(rubric.render_rating(pair.prompt, response, cot), rubric.scale, rubric.rating_prefix, cot, pointwise=True)  # type: ignore[arg-type]


def _plan_requests(pairs: list[Pair], mode: str, debias: str, seed: int, cot: bool, rubric: Rubric, backend: type[Judge], judge_identity: dict[str, Any]):
    """The judge requests of every pair, keyed for the cache (identical requests are asked once):
    pairwise one per order `debias` plans, pointwise one per response. Returns, per pair, the
    (pair, flags) plan, and the requests' keys in the order of the flags."""
    requests: dict[str, JudgeRequest] = {}
    plans, keys_of = [], []
    for pair in pairs:
        flags = [True, False] if mode == "pointwise" else plan_orders(debias, pair.id, seed)
        keys = []
        for flag in flags:
            request = _request(pair, flag, mode, cot, rubric, backend)
            key = cache_key("judge", judge_identity, asdict(request))
            requests[key] = request
            keys.append(key)
        plans.append((pair, flags))
        keys_of.append(keys)
    return plans, requests, keys_of


def _judgments(plans, keys_of, answers: dict[str, Verdict], mode: str, judge_config: JudgeConfig) -> list[PairJudgment]:
    backend = judge_class(judge_config)
    temperature = backend.score_temperature(backend.parse_options(judge_config))
    return [
        PairJudgment([(flag, answers[key]) for flag, key in zip(flags, keys)], mode == "pointwise", temperature)
        for (_, flags), keys in zip(plans, keys_of)
    ]


def _dry_run(config: LabelConfig, judge_config: JudgeConfig, loaded: LoadResult, rubric: Rubric, mode: str) -> LabelResult:
    """What a run would ask: calls not yet cached, estimated tokens and cost. Calls nothing."""
    backend = judge_class(judge_config)
    pairs, skipped = make_pairs([ex for ex in loaded.examples if ex.responses], config.seed)
    _, requests, _ = _plan_requests(pairs, mode, config.debias, config.seed, config.cot, rubric, backend, backend.identity(judge_config))
    cache_path = Path(config.cache) if config.cache else config.output_dir() / "cache.sqlite"
    cache = AnswerCache(cache_path) if cache_path.exists() else None
    missing = [r for k, r in requests.items() if cache is None or cache.get(k) is None]
    if cache is not None:
        cache.close()
    budget = backend.completion_budget(backend.parse_options(judge_config), config.cot)
    tokens = {"prompt": sum(estimate_tokens(r.prompt) for r in missing), "completion": budget * len(missing)}
    estimate = {
        "calls": len(missing),
        "cached": len(requests) - len(missing),
        "pairs": len(pairs),
        "skipped": skipped,
        "prompt_only_rows": sum(not ex.responses for ex in loaded.examples),  # their candidates are generated first
        "tokens": tokens,
        "estimated_cost": estimate_cost(judge_config.options, tokens["prompt"], tokens["completion"]),
    }
    return LabelResult(config.output_dir(), estimate=estimate)


def _batch_round(out: Path, judge_config: JudgeConfig, requests: dict[str, JudgeRequest], answers: dict[str, Verdict], cache: AnswerCache) -> dict[str, Any] | None:
    """One step of a Batch API run: collect a finished batch, or submit the calls still missing.

    The batch id is kept in `<output>/batch.json` between runs. Before a batch is asked for,
    that file holds a random tag that the batch carries in its metadata, so a run killed
    before it heard the batch id finds the batch on the next run instead of paying twice.
    Returns the batch's state while one is pending (the run stops there), or None once
    every answer is in.
    """
    judge = load_judge(judge_config)
    state_path = out / "batch.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state is not None and "batch_id" not in state:
        found = judge.find_batch(state["tag"], since=state["asked_at"] - 300)  # 5 min of clock skew
        state = None if found is None else {**state, **found}
        if state is None:
            state_path.unlink()
        else:
            write_json_atomic(state_path, state)
    if state is not None:
        status, verdicts = judge.poll_batch(state["batch_id"], requests)
        for key, verdict in verdicts.items():
            answers[key] = verdict
            if not verdict.transient:
                cache.put(key, verdict.to_dict())
        if status not in ("completed", "expired", "cancelled", "failed"):
            return {**state, "status": status}
        state_path.unlink()
        if not verdicts:
            raise JudgeFatalError(f"batch {state['batch_id']} ended as '{status}' with no results; the next run submits a new one")
    # Answers that failed in the batch are asked again, in a new batch.
    missing = {key: r for key, r in requests.items() if key not in answers or answers[key].transient}
    if not missing:
        return None
    for key in missing:
        answers.pop(key, None)
    asking = {"tag": uuid.uuid4().hex, "asked_at": time.time(), "requests": len(missing)}
    write_json_atomic(state_path, asking)
    state = {**asking, **judge.submit_batch(missing, asking["tag"])}
    write_json_atomic(state_path, state)
    return state


def _cached_answers(requests: dict[str, JudgeRequest], cache: AnswerCache) -> dict[str, Verdict]:
    return {key: Verdict.from_dict(hit) for key in requests if (hit := cache.get(key)) is not None}


def _ask_missing(judge_config: JudgeConfig, requests: dict[str, JudgeRequest], answers: dict[str, Verdict], cache: AnswerCache, progress: bool) -> int:
    """Ask the judge every request not yet in `answers`, committing each answer to the cache as
    it arrives; returns how many calls were made. The judge (a model, a client) is loaded only
    when something is left to ask."""
    missing = [key for key in requests if key not in answers]
    if not missing:
        return 0
    judge = load_judge(judge_config)
    with tqdm(total=len(requests), initial=len(answers), desc="judging", unit="call", disable=not progress) as bar:
        def on_result(index: int, verdict: Verdict) -> None:
            key = missing[index]
            answers[key] = verdict
            if not verdict.transient:  # a call that gave up is asked again next run
                cache.put(key, verdict.to_dict())
            bar.update(1)

        try:
            judge.judge([requests[k] for k in missing], on_result)
        finally:
            judge.close()
    return len(missing)


def judge_pairs(pairs: list[Pair], rubric: Rubric, judge_config: JudgeConfig, cache: AnswerCache, mode: str | None = None, debias: str = "both",
                seed: int = 0, cot: bool = False, progress: bool = True) -> list[PairJudgment]:
    """Judge each pair (in the orders `debias` plans, or each response alone in mode pointwise)
    through the answer cache. The machinery of `label`, for callers with pairs in hand."""
    backend = judge_class(judge_config)
    mode = resolve_mode(mode, backend, rubric)
    plans, requests, keys_of = _plan_requests(pairs, mode, debias, seed, cot, rubric, backend, backend.identity(judge_config))
    answers = _cached_answers(requests, cache)
    _ask_missing(judge_config, requests, answers, cache, progress)
    return _judgments(plans, keys_of, answers, mode, judge_config)


def label(config: LabelConfig) -> LabelResult:
    """Run a labeling job end to end and write its outputs; returns the rows and manifest."""
    started = time.time()
    # Everything that can be wrong with the input is found before any model is loaded.
    rubric = load_rubric(config.rubric)
    judge_config = load_judge_config(config.judge)
    if config.concurrency is not None:
        judge_config.options["concurrency"] = config.concurrency
    backend = judge_class(judge_config)
    backend.parse_options(judge_config)  # a bad option is reported before any work
    if config.batch_api and not issubclass(backend, BatchJudge):
        raise ConfigError(f"--batch-api needs a judge with a batch API (openai), not '{judge_config.backend}'")
    mode = resolve_mode(config.mode, backend, rubric)
    loaded = load_examples(config.input, config.limit, config.skip_invalid)
    plan_orders(config.debias, "check")
    if config.min_confidence is not None and not 0.5 <= config.min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence must be in [0.5, 1], got {config.min_confidence}")

    out = config.output_dir()
    if config.dry_run:
        return _dry_run(config, judge_config, loaded, rubric, mode)
    out.mkdir(parents=True, exist_ok=True)
    cache = AnswerCache(config.cache or out / "cache.sqlite")
    try:
        to_generate = [ex for ex in loaded.examples if not ex.responses]
        if to_generate:
            with tqdm(total=len(to_generate), desc="generating", disable=not config.progress) as bar:
                generate_responses(
                    to_generate, config.generator, config.num_responses, config.max_new_tokens,
                    config.temperature, config.seed, cache, on_done=lambda: bar.update(1),
                )
        pairs, skipped = make_pairs(loaded.examples, config.seed)

        plans, requests, keys_of = _plan_requests(pairs, mode, config.debias, config.seed, config.cot, rubric, backend, backend.identity(judge_config))
        answers = _cached_answers(requests, cache)
        if config.batch_api and len(answers) < len(requests):
            pending = _batch_round(out, judge_config, requests, answers, cache)
            if pending is not None:
                return LabelResult(out, pending_batch=pending)
        judging_started = time.time()
        calls_made = _ask_missing(judge_config, requests, answers, cache, config.progress)
        judging_s = time.time() - judging_started
    finally:
        cache.close()

    chat = any(not isinstance(pair.prompt, str) for pair in pairs)
    rows: list[dict[str, Any]] = []
    failures = [{"stage": "input", **f} for f in loaded.failures]
    filtered = {"inconsistent": 0, "low_confidence": 0}
    for (pair, _), judged in zip(plans, _judgments(plans, keys_of, answers, mode, judge_config)):
        if judged.failed:
            for flag, v in judged.failed:
                which = {"response": "a" if flag else "b"} if judged.pointwise else {"order": "a_first" if flag else "b_first"}
                failures.append({"stage": "judge", "id": pair.id, **which, "error": v.error, "text": v.text})
            continue
        row = _row(pair, judged, judge_config.name, rubric.name if backend.READS_RUBRIC else None, chat)
        if config.drop_inconsistent and row["consistent"] is False:
            filtered["inconsistent"] += 1
        elif config.min_confidence is not None and row["ai_preference"] < config.min_confidence:
            filtered["low_confidence"] += 1
        else:
            rows.append(row)

    write_jsonl_atomic(out / "pairs.jsonl", rows)
    write_jsonl_atomic(out / "failures.jsonl", failures)
    manifest = _manifest(config, mode, judge_config, rubric, loaded, pairs, skipped, filtered, failures, rows, answers, calls_made, started)
    manifest["timings"] = {"judging_s": round(judging_s, 3)}
    write_json_atomic(out / "manifest.json", manifest)
    return LabelResult(out, rows, failures, manifest)


def _manifest(config, mode, judge_config, rubric, loaded, pairs, skipped, filtered, failures, rows, answers, calls_made, started) -> dict[str, Any]:
    verdicts = [v for v in answers.values() if v.p_first is not None]
    shown = [r for r in rows if "orders" in r]  # pairwise rows: the only ones shown in an order
    tokens = {"prompt": sum(v.prompt_tokens for v in answers.values()), "completion": sum(v.completion_tokens for v in answers.values())}
    return {
        "rlaif_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config),
        "mode": mode,
        "judge": judge_config.public(),
        "rubric": None if not judge_class(judge_config).READS_RUBRIC else {"name": rubric.name, "path": str(rubric.path), "sha256": rubric.sha256, "labels": list(rubric.labels), "verdict_prefix": rubric.verdict_prefix,
                   "scale": list(rubric.scale) if rubric.scale else None, "rating_prefix": rubric.rating_prefix},
        "counts": {
            "examples": len(loaded.examples),
            "pairs": len(pairs),
            "labeled": len(rows),
            "consistent": sum(r["consistent"] is True for r in rows),
            "inconsistent": sum(r["consistent"] is False for r in rows),
            "skipped": skipped,
            "failed": {"invalid_rows": len(loaded.failures), "judge": len({f["id"] for f in failures if f["stage"] == "judge"})},
            "filtered": filtered,
        },
        # One call per (pair, order) pairwise, per distinct response pointwise.
        "judge_calls": {"per": "response" if mode == "pointwise" else "order", "total": len(answers), "made": calls_made, "cached": len(answers) - calls_made},
        "first_position_rate": {  # none pointwise: nothing is shown first
            # How often the judge preferred whatever it saw first, call by call.
            "raw": sum(v.p_first > 0.5 for v in verdicts) / len(verdicts) if verdicts else None,
            # How often the final label is the response shown first in the pair's first order.
            "labels": sum(r["orders"][0]["first"] == "chosen" for r in shown) / len(shown) if shown else None,
        },
        "tokens": tokens,
        "estimated_cost": estimate_cost(judge_config.options, tokens["prompt"], tokens["completion"]),
        "wall_time_s": round(time.time() - started, 2),
    }
