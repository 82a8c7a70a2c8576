"""The labeling run: input rows -> pairs -> judge calls in one or both orders -> labeled pairs.

The input streams through in chunks of `chunk_size` rows (read, generated for, judged,
written), so a run's memory does not grow with its input. Writes to the output directory:
- `pairs.jsonl`: prompt/chosen/rejected with `ai_preference` and the evidence, in input order;
- `rankings.jsonl`: for rows with more than two candidates, each candidate's score, its
  uncertainty and rank, and the calls the ranking took (`judging.candidates`);
- `failures.jsonl`: invalid rows, generations that gave up and judgments that could not be
  read, with their raw text;
- `progress.json` while the run goes: how far the two files above are whole, and the counts so
  far. A killed run's rerun cuts them back to that point and goes on with the next input row;
- `manifest.json` at the end: configuration, rubric hash, counts, position bias, tokens, time;
- `cache.sqlite`: every judge and generator answer, committed as it arrives, so a rerun or a
  resume after a kill pays for nothing twice.

Longer than 400 lines by `LabelConfig`: every option of `rlaif label` with its help (some 60 lines).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import jsonlines
from tqdm import tqdm

from rlaif.errors import ConfigError, InputError
from rlaif.inputs import SKIP_REASONS, Example, Pair, input_name, iter_examples, make_pairs
from rlaif.judging.base import MODE_HELP, MODES, BatchJudge, JudgeRequest, estimate_cost, estimate_tokens
from rlaif.judging.candidates import RankSettings, distinct_candidates, every_pair_plan, rank
from rlaif.judging.configs import DEFAULT_JUDGE
from rlaif.judging.debias import ORDERINGS
from rlaif.judging.engine import JudgeOnce, JudgeSpec, Plan, ask_missing, judge_and_rubric
from rlaif.judging.generation import SAMPLING_TEMPERATURE, Generator, generate_responses, load_generator
from rlaif.judging.ranking import PAIRINGS, STRATEGIES
from rlaif.judging.rubric import Rubric
from rlaif.labeling.batch import batch_round
from rlaif.labeling.card import command_of, write_card
from rlaif.labeling.output import (
    FAILURES,
    PAIRS,
    PROGRESS,
    Output,
    Totals,
    estimate_summary,
    manifest,
    pair_row,
    ranked_row,
    run_summary,
    set_aside_earlier_run,
)
from rlaif.labeling.quality import agreement_report
from rlaif.settings import check_settings, required, setting
from rlaif.storage.cache import AnswerCache, cache_key
from rlaif.storage.files import write_json_atomic
from rlaif.storage.locks import check_output_directory, writes_into


@dataclass
class LabelConfig:
    """Everything a labeling run depends on; the options of `rlaif label` are generated from these fields."""

    input: str = required("JSONL/JSON/CSV/Parquet (.gz too), a saved dataset directory, or a Hugging Face data set: "
                          "hf:OWNER/NAME?data_dir=DIR&split=SPLIT.")
    output: str | None = setting(None, "Output directory [default: outputs/<input name>].")
    rubric: str | None = setting(None, "Built-in rubric name or path to a Jinja2 template "
                                 "[default: the judge config's `rubric`, else quality].")
    judge: str = setting(DEFAULT_JUDGE, "Built-in judge name or path to a judge config.")
    mode: str | None = setting(None, MODE_HELP, MODES)
    cot: bool = setting(False, "Ask for a rationale first, then the verdict.")
    debias: str = setting("both", "Judge each pair in both orders, one random order, or as given (pairwise).", ORDERINGS)
    drop_inconsistent: bool = setting(False, "Leave out pairs whose two orders disagree.")
    min_confidence: float | None = setting(None, "Leave out pairs with ai_preference below this (0.5-1).", at_least=0.5, at_most=1)
    limit: int | None = setting(None, "Read at most this many input rows.", at_least=1)
    skip_invalid: bool = setting(False, "Count bad rows into failures.jsonl instead of stopping.")
    seed: int = setting(0, "Seeds the random order of --debias random and the candidates' sampling.")
    generator: str | None = setting(None, "What writes candidates for prompt-only rows: a model name or directory, "
                                    "or a judge config (built-in name or file; backend local, openai for any "
                                    "OpenAI-compatible server, or vllm) [default: embedded].")
    num_responses: int = setting(2, "Candidates to generate per prompt-only row.", at_least=2)
    prompts_only: bool = setting(False, "Read only each row's prompt: --generator writes every row's candidates "
                                 "(a data set's prompts, your policy's samples).")
    pairs: str = setting("best-worst", "Pairs a row with more than two candidates gives: "
                         "the best against the worst, the best against each of the rest, or every pair "
                         "(each labeled by its own comparison).", PAIRINGS)
    ranking: str | None = setting(None, "How such a row's candidates are ranked: adaptive comparisons in both orders "
                                  "within --max-calls-per-prompt, a knockout tournament, pointwise ratings, or every pair "
                                  "[default: adaptive; all-pairs with --pairs all].", STRATEGIES)
    max_calls_per_prompt: int | None = setting(None, "Judge calls a row's ranking may take [default: 3 per candidate for adaptive; "
                                               "what the strategy needs otherwise].", at_least=1)
    max_new_tokens: int = setting(256, "Length of generated candidates.", at_least=1)
    temperature: float = setting(SAMPLING_TEMPERATURE, "Sampling temperature of the generator.", at_least=0)
    cache: str | None = setting(None, "Answer cache file [default: <output>/cache.sqlite].")
    concurrency: int | None = setting(None, "Judge calls in flight at once (API judges) [default: the judge config's].", at_least=1)
    batch_api: bool = setting(False, "OpenAI Batch API: submit the calls, keep the batch id in the output directory, "
                              "collect on the next run.")
    dry_run: bool = setting(False, "Print the calls, tokens and cost a run would take; call nothing.")
    chunk_size: int = setting(512, "Input rows read, judged and written to pairs.jsonl at a time; "
                              "a killed run resumes after the last chunk written.", at_least=1)
    progress: bool = True  # the CLI's --quiet turns it off

    def __post_init__(self) -> None:
        check_settings(self)
        if self.pairs == "all" and self.ranking not in (None, "all-pairs"):
            raise ConfigError("--pairs all labels every pair by its own comparison: it compares every pair, "
                              f"not --ranking {self.ranking}", key="ranking")

    def rank_settings(self) -> RankSettings:
        """How rows with more than two candidates are ranked."""
        strategy = self.ranking or ("all-pairs" if self.pairs == "all" else "adaptive")
        return RankSettings(strategy, self.pairs, self.max_calls_per_prompt, self.debias, self.seed, self.cot)

    def output_dir(self) -> Path:
        if self.output:
            return Path(self.output)
        return Path("outputs") / input_name(self.input)


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

    def summary(self) -> str:
        """What the run did, in a few lines for a terminal."""
        if (b := self.pending_batch) is not None:
            return f"batch {b['batch_id']} ({b['requests']} requests) is {b['status']}; run the same command again to collect it"
        return estimate_summary(self.estimate) if self.estimate is not None else run_summary(self.manifest, self.output_dir)  # type: ignore[arg-type]


def _chunks(config: LabelConfig, skip: int = 0) -> Iterator[tuple[list[Example], list[dict[str, Any]]]]:
    """The input after its first `skip` records, `chunk_size` records at a time: the chunk's
    examples, and the failure records of its invalid rows."""
    records = islice(iter_examples(config.input, config.limit, config.skip_invalid), skip, None)
    while chunk := list(islice(records, config.chunk_size)):
        yield [x for x in chunk if isinstance(x, Example)], [x for x in chunk if not isinstance(x, Example)]


@dataclass
class ChunkPlan:
    """One chunk of the input made ready for the judge (candidates generated first for
    prompt-only rows, when the run has a generator): the pairs of its two-candidate rows, what
    was skipped and their judge requests, and the rows with more candidates, to be ranked."""

    examples: list[Example]
    pairs: list[Pair]
    skipped: dict[str, int]
    plan: Plan
    to_rank: list[Example]
    generation_failures: list[dict[str, Any]]
    prompt_only: int  # prompt-only rows left without candidates (a dry run generates nothing)


@dataclass
class _Run:
    """What one labeling run holds while its chunks go through."""

    config: LabelConfig
    rubric: Rubric
    spec: JudgeSpec
    cache: AnswerCache | None
    generator: Generator | None  # None: a dry run, which generates nothing
    rating_spec: JudgeSpec | None = None  # the judge in mode pointwise, for --ranking pointwise in a pairwise run
    chat: bool = False  # whether any prompt is a conversation: then every row is written as messages
    bar: Any = None  # the run's progress bar, set while its chunks go through

    def __post_init__(self) -> None:
        self.judge = JudgeOnce(self.spec)
        self.ranking = self.config.rank_settings()

    def plan(self, examples: list[Example]) -> ChunkPlan:
        """The one pass over a chunk that the run, the dry run and the Batch API share."""
        c = self.config
        if c.prompts_only:
            examples = [replace(ex, responses=[], human_best=None, preference=None) for ex in examples]
        failures: list[dict[str, Any]] = []
        to_generate = [ex for ex in examples if not ex.responses]
        if to_generate and self.generator is not None:
            errors = generate_responses(to_generate, self.generator, c.num_responses, c.max_new_tokens, c.temperature, c.seed, self.cache)
            failures = [{"stage": "generate", "id": ident, "error": error} for ident, error in errors.items()]
        pairs, skipped = make_pairs([ex for ex in examples if 0 < len(ex.responses) <= 2], c.seed)
        to_rank = [ex for ex in examples if len(ex.responses) > 2]
        prompt_only = sum(not ex.responses for ex in examples)
        return ChunkPlan(examples, pairs, skipped, Plan.of(pairs, self.spec, self.rubric, c.debias, c.seed, c.cot),
                         to_rank, failures, prompt_only)

    def chunk(self, examples: list[Example], invalid: list[dict[str, Any]], totals: Totals) -> tuple[list[dict[str, Any]], ...]:
        """Label one chunk of the input: its rows, failures and rankings; adds to `totals`."""
        cp = self.plan(examples)
        failures = [{"stage": "input", **f} for f in invalid] + cp.generation_failures
        answers = cp.plan.cached(self.cache)
        self.bar.total += len(cp.plan.requests)
        self.bar.update(len(answers))
        started = time.time()
        made = ask_missing(self.judge, cp.plan, answers, self.cache, lambda: self.bar.update(1))
        totals.judging_s += time.time() - started

        rows: list[dict[str, Any]] = []
        rubric = self.rubric.name if self.spec.reads_rubric else None
        for pair, judged in zip(cp.pairs, cp.plan.judgments(answers)):
            if judged.failed:
                totals.judge_failed += 1
                failures += [{"stage": "judge", "id": pair.id, **record} for record in judged.failure_records()]
                continue
            row = pair_row(pair, judged, self.spec.name, rubric, self.chat)
            self.keep(row, rows, totals)
        rankings = self.rank(cp.to_rank, rows, failures, totals) if cp.to_rank else []

        totals.records += len(examples) + len(invalid)
        totals.examples += len(examples)
        totals.invalid_rows += len(invalid)
        totals.generation_failed += len(cp.generation_failures)
        totals.pairs += len(cp.pairs)
        for reason, n in cp.skipped.items():
            totals.skipped[reason] += n
        totals.labeled += len(rows)
        totals.consistent += sum(r["consistent"] is True for r in rows)
        totals.inconsistent += sum(r["consistent"] is False for r in rows)
        totals.count_answers(answers, made)
        return rows, failures, rankings

    def keep(self, row: dict[str, Any], rows: list[dict[str, Any]], totals: Totals) -> None:
        """Add a labeled pair to the chunk's rows unless a filter leaves it out."""
        c = self.config
        if "orders" in row:
            totals.shown += 1
            totals.first_chosen += row["orders"][0]["first"] == "chosen"
        if c.drop_inconsistent and row["consistent"] is False:
            totals.filtered["inconsistent"] += 1
        elif c.min_confidence is not None and row["ai_preference"] < c.min_confidence:
            totals.filtered["low_confidence"] += 1
        else:
            rows.append(row)

    def rank(self, examples: list[Example], rows: list[dict[str, Any]], failures: list[dict[str, Any]],
             totals: Totals) -> list[dict[str, Any]]:
        """Rank the candidates of rows with more than two, adding the pairs each gives to `rows`
        and what failed to `failures`; returns the rankings' records (rankings.jsonl)."""
        started = time.time()

        ranked, answers, made = rank(examples, self.spec, self.rubric, self.ranking, self.cache, self.judge, self.rating_spec,  # type: ignore[arg-type]
                                     lambda n: setattr(self.bar, "total", self.bar.total + n), lambda: self.bar.update(1))
        totals.judging_s += time.time() - started
        totals.count_answers(answers, made)
        rubric = self.rubric.name if self.spec.reads_rubric else None
        records = []
        for st in ranked:
            written, unseparated = st.written(self.spec, self.ranking.pairing)
            for chosen, rejected in written:
                self.keep(ranked_row(st, chosen, rejected, self.spec, rubric, self.chat), rows, totals)
            failures += [{"stage": "judge", **f} for f in st.failures]
            failed = unseparated if st.failures and not written else 0  # nothing to write because the judge failed
            totals.judge_failed += failed
            totals.unseparated += unseparated - failed
            totals.ranked += 1
            totals.ranking_calls += st.calls
            totals.pairs += len(written) + unseparated
            records.append(st.record(self.ranking, len(written), unseparated))
            totals.intransitive_triples += records[-1]["intransitive_triples"]
        totals.skipped["identical_responses"] += sum(len(ex.responses) - len(st.kept) for ex, st in zip(examples, ranked))
        return records

    def missing_requests(self) -> dict[str, JudgeRequest]:
        """Every judge request of the whole input that the cache lacks (for the Batch API)."""
        missing: dict[str, JudgeRequest] = {}
        for examples, _ in _chunks(self.config):
            cp = self.plan(examples)
            if cp.to_rank and self.ranking.strategy != "all-pairs":
                raise ConfigError(f"--batch-api sends every request at once, but --ranking {self.ranking.strategy} chooses each round's "
                                  "comparisons from the last: rows with more than two candidates need --ranking all-pairs", key="batch_api")
            missing.update(cp.plan.missing(self.cache))
            missing.update(every_pair_plan(cp.to_rank, self.spec, self.rubric, self.ranking).missing(self.cache))
        return missing

    def estimate(self) -> dict[str, Any]:
        """What the run would ask: calls not yet cached, estimated tokens and cost (a jury's:
        each member's, at its own prices). Calls nothing."""
        estimate: dict[str, Any] = {"calls": 0, "cached": 0, "pairs": 0, "skipped": dict.fromkeys(SKIP_REASONS, 0), "prompt_only_rows": 0,
                                    "ranked_rows": 0, "ranking_calls_at_most": 0, "tokens": {"prompt": 0, "completion": 0}}
        costs: list[float] = []
        for examples, _ in _chunks(self.config):
            cp = self.plan(examples)
            estimate["prompt_only_rows"] += cp.prompt_only
            estimate["pairs"] += len(cp.pairs)
            for reason, n in cp.skipped.items():
                estimate["skipped"][reason] += n
            plans = [cp.plan]
            if self.ranking.strategy == "all-pairs":  # every pair's requests are known before any answer: counted as a pair's are
                plans.append(every_pair_plan(cp.to_rank, self.spec, self.rubric, self.ranking))
                estimate["pairs"] += len(plans[-1].pairs)
            else:  # the questions depend on the answers: at most the budget
                estimate["ranked_rows"] += len(cp.to_rank)
                estimate["ranking_calls_at_most"] += sum(self.ranking.budget_for(len(distinct_candidates(ex)), self.spec)
                                                         for ex in cp.to_rank if len(distinct_candidates(ex)) >= 2)
            for plan in [m for p in plans for m in (p.members or [p])]:
                missing = plan.missing(self.cache)
                prompt = sum(estimate_tokens(r.prompt) for r in missing.values())
                completion = plan.spec.completion_budget(self.config.cot) * len(missing)
                estimate["calls"] += len(missing)
                estimate["cached"] += len(plan.requests) - len(missing)
                estimate["tokens"]["prompt"] += prompt
                estimate["tokens"]["completion"] += completion
                if (cost := estimate_cost(plan.spec.config.options, prompt, completion)) is not None:
                    costs.append(cost)
        estimate["estimated_cost"] = sum(costs) if costs else None
        return estimate


def _fingerprint(config: LabelConfig, spec: JudgeSpec, rubric: Rubric) -> str:
    """What a run's rows depend on: a resume goes on only with all of it unchanged."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("progress", "concurrency", "chunk_size", "dry_run", "batch_api")}
    return cache_key(settings, spec.identity, spec.mode, rubric.sha256, spec.config.calibration)  # the mode: the judge config's may change


def _dry_run(config: LabelConfig, spec: JudgeSpec, rubric: Rubric) -> LabelResult:
    cache_path = Path(config.cache) if config.cache else config.output_dir() / "cache.sqlite"
    cache = AnswerCache(cache_path, read_only=True) if cache_path.is_file() else None  # a dry run creates and changes nothing
    try:
        return LabelResult(config.output_dir(), estimate=_Run(config, rubric, spec, cache, None).estimate())
    finally:
        if cache is not None:
            cache.close()


@writes_into(lambda config: None if config.dry_run else config.output_dir())
def label(config: LabelConfig) -> LabelResult:
    """Run a labeling job end to end and write its outputs; returns what it did."""
    started = time.time()
    # Everything that can be wrong with the settings and the input is found before any model is loaded.
    spec, rubric = judge_and_rubric(config.judge, config.rubric, config.mode, config.concurrency)
    if config.batch_api and not (spec.backend and issubclass(spec.backend, BatchJudge)):
        raise ConfigError(f"--batch-api needs a judge with a batch API (openai), not '{spec.config.backend}'")
    settings = config.rank_settings()
    rating_spec = JudgeSpec.build(spec.config, rubric, "pointwise") if settings.strategy == "pointwise" and not spec.pointwise else None
    generator = load_generator(config.generator)
    records, chat = 0, False
    for item in iter_examples(config.input, config.limit, config.skip_invalid):  # one pass: a bad row stops the run now
        records += 1
        if not isinstance(item, Example):
            continue
        chat = chat or not isinstance(item.prompt, str)
        if rubric.needs_reference and spec.reads_rubric and item.reference is None:
            file, _, line = item.source.rpartition(":")
            raise InputError(file, int(line), "reference",
                             f"missing: rubric {rubric.name} grades against a reference answer, so every row needs one")
        if (n := (not config.prompts_only and len(item.responses)) or config.num_responses) > 2:
            settings.budget_for(n, spec)  # a budget too small for the row's candidates is an error now
    if records == 0:
        raise InputError(config.input, None, None, "no rows to label" + (" (its ?rows= selects none)" if "rows=" in config.input else ""))

    if config.dry_run:
        check_output_directory(config.output_dir())  # what the run would fail on, the dry run says
        return _dry_run(config, spec, rubric)
    out = config.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    cache = AnswerCache(config.cache or out / "cache.sqlite")
    fingerprint = _fingerprint(config, spec, rubric)
    run = _Run(config, rubric, spec, cache, generator, rating_spec=rating_spec, chat=chat)
    try:
        if config.batch_api and (missing := run.missing_requests()):
            pending = batch_round(out, spec, missing, cache)
            if pending is not None:
                return LabelResult(out, pending_batch=pending)
        if (aside := set_aside_earlier_run(out, fingerprint)) is not None:
            print(f"{out}: an earlier run with other settings is moved to {aside}", file=sys.stderr)
        with Output.open(out, fingerprint) as output, \
                tqdm(total=0, desc="labeling", unit="call", disable=not config.progress) as run.bar:
            totals = output.totals
            for examples, invalid in _chunks(config, skip=totals.records):
                output.write(*run.chunk(examples, invalid, totals))
                run.bar.set_postfix_str(f"{totals.records}/{records} rows")
    finally:
        run.judge.close()
        generator.close()
        cache.close()

    result = LabelResult(out, manifest(asdict(config), spec, rubric, totals, started, fingerprint, settings.strategy))
    write_json_atomic(out / "manifest.json", result.manifest)
    write_card(out, result.manifest, agreement_report(result.rows, result.manifest), command_of(config))
    (out / PROGRESS).unlink()
    return result
