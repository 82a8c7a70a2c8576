"""The labeling run: input rows -> pairs -> judge calls in one or both orders -> labeled pairs.

The input streams through in chunks of `chunk_size` rows (read, generated for, judged,
written), so a run's memory does not grow with its input. Writes to the output directory:
- `pairs.jsonl`: prompt/chosen/rejected with `ai_preference` and the evidence, in input order;
- `failures.jsonl`: invalid rows, generations that gave up and judgments that could not be
  read, with their raw text;
- `progress.json` while the run goes: how far the two files above are whole, and the counts so
  far. A killed run's rerun cuts them back to that point and goes on with the next input row;
- `manifest.json` at the end: configuration, rubric hash, counts, position bias, tokens, time;
- `cache.sqlite`: every judge and generator answer, committed as it arrives, so a rerun or a
  resume after a kill pays for nothing twice.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import jsonlines
from tqdm import tqdm

from rlaif import __version__
from rlaif.cache import AnswerCache, cache_key
from rlaif.data import SKIP_REASONS, Example, Pair, as_messages, input_name, iter_examples, make_pairs
from rlaif.debias import consistent, plan_orders, pointwise_preference, preference_for_a
from rlaif.errors import ConfigError
from rlaif.files import write_json_atomic
from rlaif.generation import Generator, generate_responses, load_generator
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
    generator: str | None = None  # for prompt-only rows: a model, or a judge config (local, openai, vllm); the embedded model by default
    num_responses: int = 2
    max_new_tokens: int = 256
    temperature: float = 0.8
    cache: str | None = None  # default: <output>/cache.sqlite
    concurrency: int | None = None  # overrides the judge config's (API judges)
    batch_api: bool = False  # OpenAI Batch API: submit, then collect on a later run
    dry_run: bool = False  # count calls, tokens and cost; call nothing, write nothing
    chunk_size: int = 512  # input rows read, judged and written at a time
    progress: bool = True

    def output_dir(self) -> Path:
        if self.output:
            return Path(self.output)
        return Path("outputs") / input_name(self.input)


PAIRS, FAILURES, PROGRESS = "pairs.jsonl", "failures.jsonl", "progress.json"


@dataclass
class LabelResult:
    """What a run did. A finished run has `manifest` (also written as manifest.json), and its
    `rows` and `failures` are read from its files; a `--batch-api` run still waiting has
    `pending_batch` instead; `--dry-run` has `estimate`."""

    output_dir: Path
    manifest: dict[str, Any] | None = None
    pending_batch: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None

    def _read(self, name: str) -> list[dict[str, Any]]:
        if self.manifest is None:
            return []
        with jsonlines.open(self.output_dir / name) as reader:
            return list(reader)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self._read(PAIRS)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return self._read(FAILURES)


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
        "prompt": as_messages(pair.prompt, "user") if chat else pair.prompt,
        "chosen": as_messages(chosen, "assistant") if chat else chosen,
        "rejected": as_messages(rejected, "assistant") if chat else rejected,
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


def _judgments(plans, keys_of, answers: dict[str, Verdict], mode: str, temperature: float) -> list[PairJudgment]:
    return [
        PairJudgment([(flag, answers[key]) for flag, key in zip(flags, keys)], mode == "pointwise", temperature)
        for (_, flags), keys in zip(plans, keys_of)
    ]


def _chunks(config: LabelConfig, skip: int = 0) -> Iterator[tuple[list[Example], list[dict[str, Any]]]]:
    """The input after its first `skip` records, `chunk_size` records at a time: the chunk's
    examples, and the failure records of its invalid rows."""
    records = islice(iter_examples(config.input, config.limit, config.skip_invalid), skip, None)
    while chunk := list(islice(records, config.chunk_size)):
        yield [x for x in chunk if isinstance(x, Example)], [x for x in chunk if not isinstance(x, Example)]


@dataclass
class Totals:
    """What a run has counted so far (the manifest's numbers), and how far its input and output
    files are done; kept in progress.json after every chunk."""

    records: int = 0  # input records done: examples and invalid rows
    examples: int = 0
    invalid_rows: int = 0
    generation_failed: int = 0
    pairs: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    judge_failed: int = 0
    labeled: int = 0
    consistent: int = 0
    inconsistent: int = 0
    filtered: dict[str, int] = field(default_factory=lambda: {"inconsistent": 0, "low_confidence": 0})
    calls: int = 0
    calls_made: int = 0
    unreadable: int = 0  # answers with no verdict that could be read
    soft: int = 0  # answers with a soft verdict (label probabilities, not a parsed label)
    verdicts: int = 0  # pairwise answers with a verdict
    first_preferred: int = 0  # ... that preferred what they were shown first
    shown: int = 0  # pairwise rows
    first_chosen: int = 0  # ... whose label is what their first order showed first
    prompt_tokens: int = 0
    completion_tokens: int = 0
    judging_s: float = 0.0
    pairs_bytes: int = 0
    failures_bytes: int = 0


class _Output:
    """pairs.jsonl and failures.jsonl, appended a chunk at a time, and progress.json, which says
    how far both are whole. A run with the same settings as a killed one cuts the files back to
    that point and takes up its counts; any other run starts them afresh."""

    def __init__(self, out: Path, fingerprint: str, totals: Totals, files: dict[str, BinaryIO]):
        self.out, self.fingerprint, self.totals, self._files = out, fingerprint, totals, files

    @classmethod
    @contextmanager
    def open(cls, out: Path, fingerprint: str) -> Iterator[_Output]:
        state = json.loads((out / PROGRESS).read_text()) if (out / PROGRESS).exists() else {}
        totals = Totals(**state["totals"]) if state.get("fingerprint") == fingerprint else Totals()
        with open(out / PAIRS, "ab") as pairs, open(out / FAILURES, "ab") as failures:
            for fh, length in ((pairs, totals.pairs_bytes), (failures, totals.failures_bytes)):
                fh.truncate(length)
                fh.seek(0, os.SEEK_END)
            yield cls(out, fingerprint, totals, {PAIRS: pairs, FAILURES: failures})

    def write(self, rows: list[dict[str, Any]], failures: list[dict[str, Any]]) -> None:
        """Append a chunk's rows and failures, then record the new lengths and counts."""
        for name, items in ((PAIRS, rows), (FAILURES, failures)):
            fh = self._files[name]
            jsonlines.Writer(fh).write_all(items)
            fh.flush()
            os.fsync(fh.fileno())
        self.totals.pairs_bytes, self.totals.failures_bytes = self._files[PAIRS].tell(), self._files[FAILURES].tell()
        write_json_atomic(self.out / PROGRESS, {"fingerprint": self.fingerprint, "totals": asdict(self.totals)})


EARLY_ANSWERS = 10  # a run's first answers, which say whether its judge's verdicts can be read at all


class UnreadableJudge(JudgeFatalError):
    """Most of a run's first answers had no verdict that could be read: the run stops."""


class JudgeOnce:
    """The run's judge, built when first asked for (a run whose answers are all cached loads no
    model and opens no connection), then kept for the whole run. It watches the run's first
    answers: when most of them cannot be read, paying for the rest would buy nothing."""

    def __init__(self, config: JudgeConfig):
        self.config = config
        self._judge: Judge | None = None
        self._first: list[Verdict] = []

    def check(self, verdict: Verdict) -> None:
        """Count a fresh answer; raise `UnreadableJudge` once most of the first ones had no verdict."""
        if verdict.transient or len(self._first) >= EARLY_ANSWERS:
            return
        self._first.append(verdict)
        unreadable = [v for v in self._first if v.value is None]
        if len(self._first) == EARLY_ANSWERS and len(unreadable) > EARLY_ANSWERS // 2:
            backend = judge_class(self.config)
            other = [w for w in backend.VERDICTS if w != getattr(backend.parse_options(self.config), "verdict", None)]
            hint = f" Read the verdict another way: set `verdict` in the config's options to {' or '.join(map(repr, other))}." if other else ""
            raise UnreadableJudge(f"judge '{self.config.name}' gave no readable verdict in {len(unreadable)} of its first {EARLY_ANSWERS} answers "
                                  f"({unreadable[0].error}); one reply was: {(unreadable[0].text or '')[:300]!r}.{hint}")

    def __call__(self) -> Judge:
        if self._judge is None:
            self._judge = load_judge(self.config)
        return self._judge

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()


def _cached_answers(requests: dict[str, JudgeRequest], cache: AnswerCache) -> dict[str, Verdict]:
    return {key: Verdict.from_dict(hit) for key in requests if (hit := cache.get(key)) is not None}


def _ask_missing(judge: JudgeOnce, requests: dict[str, JudgeRequest], answers: dict[str, Verdict], cache: AnswerCache,
                 on_answer: Callable[[], None] = lambda: None) -> int:
    """Ask the judge every request not yet in `answers`, committing each answer to the cache as
    it arrives; returns how many calls were made."""
    for key in requests:  # cached answers count too: a rerun of a run that stopped here stops again before paying
        if key in answers:
            judge.check(answers[key])
    missing = [key for key in requests if key not in answers]
    if not missing:
        return 0

    def on_result(index: int, verdict: Verdict) -> None:
        key = missing[index]
        answers[key] = verdict
        if not verdict.transient:  # a call that gave up is asked again next run
            cache.put(key, verdict.to_dict())
        on_answer()
        judge.check(verdict)

    judge().judge([requests[k] for k in missing], on_result)
    return len(missing)


def judge_pairs(pairs: list[Pair], rubric: Rubric, judge_config: JudgeConfig, cache: AnswerCache, mode: str | None = None, debias: str = "both",
                seed: int = 0, cot: bool = False, progress: bool = True, judge: JudgeOnce | None = None) -> list[PairJudgment]:
    """Judge each pair (in the orders `debias` plans, or each response alone in mode pointwise)
    through the answer cache. The machinery of `label`, for callers with pairs in hand; a
    caller that judges again and again passes its own `judge`, kept open between calls."""
    backend = judge_class(judge_config)
    mode = resolve_mode(mode, backend, rubric)
    plans, requests, keys_of = _plan_requests(pairs, mode, debias, seed, cot, rubric, backend, backend.identity(judge_config))
    answers = _cached_answers(requests, cache)
    own = judge is None
    judge = judge or JudgeOnce(judge_config)
    try:
        with tqdm(total=len(requests), initial=len(answers), desc="judging", unit="call", disable=not progress) as bar:
            _ask_missing(judge, requests, answers, cache, lambda: bar.update(1))
    finally:
        if own:
            judge.close()
    return _judgments(plans, keys_of, answers, mode, backend.score_temperature(backend.parse_options(judge_config)))


@dataclass
class _Run:
    """What one labeling run holds while its chunks go through."""

    config: LabelConfig
    rubric: Rubric
    judge_config: JudgeConfig
    mode: str
    cache: AnswerCache
    generator: Generator
    chat: bool  # whether any prompt is a conversation: then every row is written as messages
    bar: Any = None  # the run's progress bar, set while its chunks go through

    def __post_init__(self) -> None:
        self.backend = judge_class(self.judge_config)
        self.identity = self.backend.identity(self.judge_config)
        self.temperature = self.backend.score_temperature(self.backend.parse_options(self.judge_config))
        self.judge = JudgeOnce(self.judge_config)

    def responses(self, examples: list[Example]) -> dict[str, str]:
        """Generate candidates for the prompt-only rows; returns why some got none."""
        to_generate = [ex for ex in examples if not ex.responses]
        if not to_generate:
            return {}
        c = self.config
        return generate_responses(to_generate, self.generator, c.num_responses, c.max_new_tokens, c.temperature, c.seed, self.cache)

    def plan(self, pairs: list[Pair]):
        c = self.config
        return _plan_requests(pairs, self.mode, c.debias, c.seed, c.cot, self.rubric, self.backend, self.identity)

    def chunk(self, examples: list[Example], invalid: list[dict[str, Any]], totals: Totals) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Label one chunk of the input: its rows and failures, in input order; adds to `totals`."""
        c = self.config
        failures = [{"stage": "input", **f} for f in invalid]
        for ident, error in self.responses(examples).items():
            failures.append({"stage": "generate", "id": ident, "error": error})
        pairs, skipped = make_pairs(examples, c.seed)
        plans, requests, keys_of = self.plan(pairs)
        answers = _cached_answers(requests, self.cache)
        self.bar.total += len(requests)
        self.bar.update(len(answers))
        started = time.time()
        made = _ask_missing(self.judge, requests, answers, self.cache, lambda: self.bar.update(1))
        totals.judging_s += time.time() - started

        rows: list[dict[str, Any]] = []
        for (pair, _), judged in zip(plans, _judgments(plans, keys_of, answers, self.mode, self.temperature)):
            if judged.failed:
                totals.judge_failed += 1
                for flag, v in judged.failed:
                    which = {"response": "a" if flag else "b"} if judged.pointwise else {"order": "a_first" if flag else "b_first"}
                    failures.append({"stage": "judge", "id": pair.id, **which, "error": v.error, "text": v.text})
                continue
            row = _row(pair, judged, self.judge_config.name, self.rubric.name if self.backend.READS_RUBRIC else None, self.chat)
            if "orders" in row:
                totals.shown += 1
                totals.first_chosen += row["orders"][0]["first"] == "chosen"
            if c.drop_inconsistent and row["consistent"] is False:
                totals.filtered["inconsistent"] += 1
            elif c.min_confidence is not None and row["ai_preference"] < c.min_confidence:
                totals.filtered["low_confidence"] += 1
            else:
                rows.append(row)

        totals.records += len(examples) + len(invalid)
        totals.examples += len(examples)
        totals.invalid_rows += len(invalid)
        totals.generation_failed += sum(f["stage"] == "generate" for f in failures)
        totals.pairs += len(pairs)
        for reason, n in skipped.items():
            totals.skipped[reason] += n
        totals.labeled += len(rows)
        totals.consistent += sum(r["consistent"] is True for r in rows)
        totals.inconsistent += sum(r["consistent"] is False for r in rows)
        totals.calls += len(answers)
        totals.calls_made += made
        totals.unreadable += sum(v.value is None and not v.transient for v in answers.values())
        totals.soft += sum(v.soft and v.value is not None for v in answers.values())
        verdicts = [v for v in answers.values() if v.p_first is not None]
        totals.verdicts += len(verdicts)
        totals.first_preferred += sum(v.p_first > 0.5 for v in verdicts)
        totals.prompt_tokens += sum(v.prompt_tokens for v in answers.values())
        totals.completion_tokens += sum(v.completion_tokens for v in answers.values())
        return rows, failures

    def missing_requests(self) -> dict[str, JudgeRequest]:
        """Every judge request of the whole input that the cache lacks (for the Batch API)."""
        missing: dict[str, JudgeRequest] = {}
        for examples, _ in _chunks(self.config):
            self.responses(examples)
            _, requests, _ = self.plan(make_pairs(examples, self.config.seed)[0])
            missing.update({key: r for key, r in requests.items() if self.cache.get(key) is None})
        return missing


def _dry_run(config: LabelConfig, judge_config: JudgeConfig, rubric: Rubric, mode: str) -> LabelResult:
    """What a run would ask: calls not yet cached, estimated tokens and cost. Calls nothing."""
    backend = judge_class(judge_config)
    identity = backend.identity(judge_config)
    cache_path = Path(config.cache) if config.cache else config.output_dir() / "cache.sqlite"
    cache = AnswerCache(cache_path) if cache_path.exists() else None
    budget = backend.completion_budget(backend.parse_options(judge_config), config.cot)
    estimate: dict[str, Any] = {"calls": 0, "cached": 0, "pairs": 0, "skipped": dict.fromkeys(SKIP_REASONS, 0),
                                "prompt_only_rows": 0, "tokens": {"prompt": 0, "completion": 0}}  # prompt-only rows: candidates generated first
    try:
        for examples, _ in _chunks(config):
            estimate["prompt_only_rows"] += sum(not ex.responses for ex in examples)
            pairs, skipped = make_pairs([ex for ex in examples if ex.responses], config.seed)
            _, requests, _ = _plan_requests(pairs, mode, config.debias, config.seed, config.cot, rubric, backend, identity)
            missing = [r for k, r in requests.items() if cache is None or cache.get(k) is None]
            estimate["pairs"] += len(pairs)
            for reason, n in skipped.items():
                estimate["skipped"][reason] += n
            estimate["calls"] += len(missing)
            estimate["cached"] += len(requests) - len(missing)
            estimate["tokens"]["prompt"] += sum(estimate_tokens(r.prompt) for r in missing)
            estimate["tokens"]["completion"] += budget * len(missing)
    finally:
        if cache is not None:
            cache.close()
    estimate["estimated_cost"] = estimate_cost(judge_config.options, estimate["tokens"]["prompt"], estimate["tokens"]["completion"])
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



def _fingerprint(config: LabelConfig, judge_config: JudgeConfig, rubric: Rubric) -> str:
    """What a run's rows depend on: a resume goes on only with all of it unchanged."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("progress", "concurrency", "chunk_size", "dry_run", "batch_api")}
    return cache_key(settings, judge_class(judge_config).identity(judge_config), rubric.sha256)


def label(config: LabelConfig) -> LabelResult:
    """Run a labeling job end to end and write its outputs; returns the manifest."""
    started = time.time()
    # Everything that can be wrong with the settings and the input is found before any model is loaded.
    rubric = load_rubric(config.rubric)
    judge_config = load_judge_config(config.judge)
    if config.concurrency is not None:
        judge_config.options["concurrency"] = config.concurrency
    backend = judge_class(judge_config)
    backend.parse_options(judge_config)  # a bad option is reported before any work
    if config.batch_api and not issubclass(backend, BatchJudge):
        raise ConfigError(f"--batch-api needs a judge with a batch API (openai), not '{judge_config.backend}'")
    mode = resolve_mode(config.mode, backend, rubric)
    plan_orders(config.debias, "check")
    if config.min_confidence is not None and not 0.5 <= config.min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence must be in [0.5, 1], got {config.min_confidence}")
    if config.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1, got {config.chunk_size}")
    generator = load_generator(config.generator)
    records, chat = 0, False
    for item in iter_examples(config.input, config.limit, config.skip_invalid):  # one pass: a bad row stops the run now
        records += 1
        chat = chat or (isinstance(item, Example) and not isinstance(item.prompt, str))

    out = config.output_dir()
    if config.dry_run:
        return _dry_run(config, judge_config, rubric, mode)
    out.mkdir(parents=True, exist_ok=True)
    cache = AnswerCache(config.cache or out / "cache.sqlite")
    run = _Run(config, rubric, judge_config, mode, cache, generator, chat)
    try:
        if config.batch_api and (missing := run.missing_requests()):
            pending = _batch_round(out, judge_config, missing, {}, cache)
            if pending is not None:
                return LabelResult(out, pending_batch=pending)
        with _Output.open(out, _fingerprint(config, judge_config, rubric)) as output, \
                tqdm(total=0, desc="labeling", unit="call", disable=not config.progress) as run.bar:
            totals = output.totals
            for examples, invalid in _chunks(config, skip=totals.records):
                output.write(*run.chunk(examples, invalid, totals))
                run.bar.set_postfix_str(f"{totals.records}/{records} rows")
    finally:
        run.judge.close()
        generator.close()
        cache.close()

    manifest = _manifest(config, mode, judge_config, rubric, totals, started)
    write_json_atomic(out / "manifest.json", manifest)
    (out / PROGRESS).unlink()
    return LabelResult(out, manifest)


def _manifest(config: LabelConfig, mode: str, judge_config: JudgeConfig, rubric: Rubric, t: Totals, started: float) -> dict[str, Any]:
    tokens = {"prompt": t.prompt_tokens, "completion": t.completion_tokens}
    return {
        "rlaif_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config),
        "mode": mode,
        "judge": judge_config.public(),
        "rubric": None if not judge_class(judge_config).READS_RUBRIC else {"name": rubric.name, "path": str(rubric.path), "sha256": rubric.sha256, "labels": list(rubric.labels), "verdict_prefix": rubric.verdict_prefix,
                   "scale": list(rubric.scale) if rubric.scale else None, "rating_prefix": rubric.rating_prefix},
        "counts": {
            "examples": t.examples,
            "pairs": t.pairs,
            "labeled": t.labeled,
            "consistent": t.consistent,
            "inconsistent": t.inconsistent,
            "skipped": t.skipped,
            "failed": {"invalid_rows": t.invalid_rows, "generation": t.generation_failed, "judge": t.judge_failed},
            "filtered": t.filtered,
        },
        # One call per (pair, order) pairwise, per distinct response pointwise.
        "judge_calls": {"per": "response" if mode == "pointwise" else "order", "total": t.calls, "made": t.calls_made, "cached": t.calls - t.calls_made},
        "verdicts": {  # of the answers: unreadable (no verdict in the reply) and soft (label probabilities)
            "unreadable": t.unreadable,
            "unreadable_share": t.unreadable / t.calls if t.calls else None,
            "soft": t.soft,
            "soft_share": t.soft / t.calls if t.calls else None,
        },
        "first_position_rate": {  # none pointwise: nothing is shown first
            # How often the judge preferred whatever it saw first, call by call.
            "raw": t.first_preferred / t.verdicts if t.verdicts else None,
            # How often the final label is the response shown first in the pair's first order.
            "labels": t.first_chosen / t.shown if t.shown else None,
        },
        "tokens": tokens,
        "estimated_cost": estimate_cost(judge_config.options, tokens["prompt"], tokens["completion"]),
        "timings": {"judging_s": round(t.judging_s, 3)},
        "wall_time_s": round(time.time() - started, 2),
    }
