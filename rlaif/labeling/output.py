"""What a labeling run writes: `pairs.jsonl`, `failures.jsonl` and `rankings.jsonl`, appended a
chunk at a time, `progress.json` (how far they are whole, and the counts so far) and, at the end,
`manifest.json`. The fields of each are listed in docs/output-formats.md."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import jsonlines

from rlaif.inputs import SKIP_REASONS, Pair, as_messages
from rlaif.judging.base import Verdict, estimate_cost
from rlaif.judging.candidates import Ranked
from rlaif.judging.engine import JudgeSpec, JuryJudgment, PairJudgment
from rlaif.judging.rubric import Rubric
from rlaif.storage.files import run_stamp, write_json_atomic

PAIRS, FAILURES, RANKINGS, PROGRESS = "pairs.jsonl", "failures.jsonl", "rankings.jsonl", "progress.json"
# What a run writes into its directory besides the cache (shared by any run), and what is derived from it later.
RUN_FILES = (PAIRS, FAILURES, RANKINGS, PROGRESS, "manifest.json", "README.md", "agreement.json", "reliability.png",
             "calibrated-judge.yaml")
EARLIER = "earlier-runs"
PRICE_UNIT = "in the currency of the judge config's prices"  # the built-in configs give USD


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
    too_long: int = 0  # requests longer than the judge can read, not asked
    soft: int = 0  # answers with a soft verdict (label probabilities, not a parsed label)
    verdicts: int = 0  # pairwise answers with a verdict
    first_preferred: int = 0  # ... that preferred what they were shown first
    shown: int = 0  # pairwise rows
    first_chosen: int = 0  # ... whose label is what their first order showed first
    prompt_tokens: int = 0
    completion_tokens: int = 0
    judging_s: float = 0.0
    ranked: int = 0  # rows with more than two candidates, ranked
    ranking_calls: int = 0  # ... the calls their rankings took (cached ones too)
    unseparated: int = 0  # ... pairs they asked for that the judge did not separate, left out
    intransitive_triples: int = 0
    pairs_bytes: int = 0
    failures_bytes: int = 0
    rankings_bytes: int = 0

    def count_answers(self, answers: dict[str, Verdict], made: int) -> None:
        """Add a chunk's answers (cached and fresh; `made` of them were calls) to the counts."""
        self.calls += len(answers)
        self.calls_made += made
        self.unreadable += sum(v.value is None and not v.transient and not v.too_long for v in answers.values())
        self.too_long += sum(v.too_long for v in answers.values())
        self.soft += sum(v.soft and v.value is not None for v in answers.values())
        verdicts = [v for v in answers.values() if v.p_first is not None]
        self.verdicts += len(verdicts)
        self.first_preferred += sum(v.p_first > 0.5 for v in verdicts)
        self.prompt_tokens += sum(v.prompt_tokens for v in answers.values())
        self.completion_tokens += sum(v.completion_tokens for v in answers.values())


def set_aside_earlier_run(out: Path, fingerprint: str) -> Path | None:
    """Move the files of an earlier run with other settings (its rows, and what was derived from
    them: the card, `agreement.json`, a calibrated config) into `earlier-runs/<when it began>/`,
    so that nothing in the directory describes a run that is no longer there; the answer cache
    stays, shared. Returns where they went, or None when there was no such run (or the same
    settings, which a rerun takes up)."""
    for name in (PROGRESS, "manifest.json"):
        if (out / name).exists():
            earlier = json.loads((out / name).read_text())
            if earlier.get("fingerprint") == fingerprint:
                return None
            break
    else:
        if not (out / PAIRS).exists():
            return None
    target = out / EARLIER / time.strftime("%Y%m%d-%H%M%S", time.localtime((out / PAIRS).stat().st_mtime
                                                                           if (out / PAIRS).exists() else time.time()))
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (out / name).exists():
            os.replace(out / name, target / name)
    return target


class Output:
    """pairs.jsonl, failures.jsonl and rankings.jsonl, appended a chunk at a time, and
    progress.json, which says how far they are whole. A run with the same settings as a killed
    one cuts the files back to that point and takes up its counts; any other run starts them afresh."""

    def __init__(self, out: Path, fingerprint: str, totals: Totals, files: dict[str, BinaryIO]):
        self.out, self.fingerprint, self.totals, self._files = out, fingerprint, totals, files

    @classmethod
    @contextmanager
    def open(cls, out: Path, fingerprint: str) -> Iterator[Output]:
        state = json.loads((out / PROGRESS).read_text()) if (out / PROGRESS).exists() else {}
        totals = Totals(**state["totals"]) if state.get("fingerprint") == fingerprint else Totals()
        with open(out / PAIRS, "ab") as pairs, open(out / FAILURES, "ab") as failures, open(out / RANKINGS, "ab") as rankings:
            for fh, length in ((pairs, totals.pairs_bytes), (failures, totals.failures_bytes), (rankings, totals.rankings_bytes)):
                fh.truncate(length)
                fh.seek(0, os.SEEK_END)
            yield cls(out, fingerprint, totals, {PAIRS: pairs, FAILURES: failures, RANKINGS: rankings})

    def write(self, rows: list[dict[str, Any]], failures: list[dict[str, Any]], rankings: list[dict[str, Any]]) -> None:
        """Append a chunk's rows, failures and rankings, then record the new lengths and counts."""
        for name, items in ((PAIRS, rows), (FAILURES, failures), (RANKINGS, rankings)):
            fh = self._files[name]
            jsonlines.Writer(fh).write_all(items)
            fh.flush()
            os.fsync(fh.fileno())
        self.totals.pairs_bytes, self.totals.failures_bytes = self._files[PAIRS].tell(), self._files[FAILURES].tell()
        self.totals.rankings_bytes = self._files[RANKINGS].tell()
        write_json_atomic(self.out / PROGRESS, {"fingerprint": self.fingerprint, "totals": asdict(self.totals)})


def evidence(judged: PairJudgment, a_wins: bool) -> dict[str, Any]:
    """A judgment's answers, named by the chosen and rejected response: `scores` pointwise (A's,
    then B's), `orders` pairwise (in the order they were planned)."""
    if judged.pointwise:
        return {"scores": [{"response": "chosen" if is_a == a_wins else "rejected", "score": v.score, "soft": v.soft, "text": v.text}
                           for is_a, v in judged.answers]}
    return {"orders": [{"first": "chosen" if a_first == a_wins else "rejected", "p_first": v.p_first, "soft": v.soft, "text": v.text}
                       for a_first, v in judged.answers]}


def pair_row(pair: Pair, judged: PairJudgment | JuryJudgment, judge: str, rubric: str | None, chat: bool) -> dict[str, Any]:
    """A labeled pair as pairs.jsonl holds it: chosen and rejected by the judge, with the
    evidence (a jury's: each member's preference for the chosen response and its answers)."""
    p_a = judged.p_a
    a_wins = p_a >= 0.5
    chosen, rejected = (pair.a, pair.b) if a_wins else (pair.b, pair.a)
    row: dict[str, Any] = {
        "id": pair.id,
        "prompt": as_messages(pair.prompt, "user") if chat else pair.prompt,
        "chosen": as_messages(chosen, "assistant") if chat else chosen,
        "rejected": as_messages(rejected, "assistant") if chat else rejected,
        "ai_preference": max(p_a, 1.0 - p_a),
    }
    if isinstance(judged, JuryJudgment):
        row["mode"] = "jury"
        row["members"] = [{"judge": name, "weight": w, "mode": "pointwise" if m.pointwise else "pairwise",
                           "p_chosen": m.p_a if a_wins else 1.0 - m.p_a, **evidence(m, a_wins)}
                          for name, w, m in zip(judged.names, judged.weights, judged.members)]
    else:
        row["mode"] = "pointwise" if judged.pointwise else "pairwise"
        row.update(evidence(judged, a_wins))
    row.update(consistent=judged.consistent, judge=judge, rubric=rubric)
    if pair.human is not None:
        row["human_preference"] = pair.human if a_wins else 1.0 - pair.human
    if pair.reference is not None:
        row["reference"] = pair.reference
    return row


def ranked_row(st: Ranked, chosen: int, rejected: int, spec: JudgeSpec, rubric: str | None, chat: bool) -> dict[str, Any]:
    """A pair a ranking gives, as pairs.jsonl holds it: the judge's comparison of the two (or their
    scores), and under `ranking` each candidate's index, rank, score and its standard error."""
    i, j = min(chosen, rejected), max(chosen, rejected)
    row = pair_row(st.pair(i, j), st.judgment(i, j, spec), spec.name, rubric, chat)
    rank = {c: r + 1 for r, c in enumerate(st.order)}
    side = lambda k: {"candidate": st.kept[k], "rank": rank[k], "score": st.scores[k], "se": st.errors[k]}
    row["ranking"] = {"candidates": st.evidence.n, "chosen": side(chosen), "rejected": side(rejected)}
    return row


def manifest(settings: dict[str, Any], spec: JudgeSpec, rubric: Rubric, t: Totals, started: float, fingerprint: str,
             strategy: str | None = None) -> dict[str, Any]:
    """The run's manifest.json: its settings, judge, rubric and counts (`strategy`: how rows with
    more than two candidates were ranked)."""
    tokens = {"prompt": t.prompt_tokens, "completion": t.completion_tokens}
    return {
        **run_stamp(),
        "fingerprint": fingerprint,
        "config": settings,
        "mode": spec.mode,
        "judge": spec.config.public(),
        "rubric": None if not spec.reads_rubric else {"name": rubric.name, "path": str(rubric.path), "sha256": rubric.sha256,
                   "labels": list(rubric.labels), "verdict_prefix": rubric.verdict_prefix,
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
        # One call per (pair, order) pairwise, per distinct response pointwise; a jury's members each their own.
        "judge_calls": {"per": {"pointwise": "response", "jury": "member's request"}.get(spec.mode, "order"),
                        "total": t.calls, "made": t.calls_made, "cached": t.calls - t.calls_made},
        "verdicts": {  # of the answers: unreadable (no verdict in the reply) and soft (label probabilities)
            "unreadable": t.unreadable,
            "unreadable_share": t.unreadable / t.calls if t.calls else None,
            "soft": t.soft,
            "soft_share": t.soft / t.calls if t.calls else None,
            "too_long": t.too_long,  # requests longer than the judge reads: not asked (their pairs are in failures.jsonl)
        },
        "first_position_rate": {  # none pointwise: nothing is shown first
            # How often the judge preferred whatever it saw first, call by call.
            "raw": t.first_preferred / t.verdicts if t.verdicts else None,
            # How often the final label is the response shown first in the pair's first order.
            "labels": t.first_chosen / t.shown if t.shown else None,
        },
        "ranking": None if not t.ranked else {  # rows with more than two candidates
            "strategy": strategy,
            "pairs": settings["pairs"],
            "max_calls_per_prompt": settings["max_calls_per_prompt"],
            "rows": t.ranked,
            "calls": t.ranking_calls,
            "calls_per_row": t.ranking_calls / t.ranked,
            "unseparated": t.unseparated,
            "intransitive_triples": t.intransitive_triples,
        },
        "tokens": tokens,
        "estimated_cost": estimate_cost(spec.config.options, tokens["prompt"], tokens["completion"]),
        "timings": {"judging_s": round(t.judging_s, 3)},
        "wall_time_s": round(time.time() - started, 2),
    }


def estimate_summary(d: dict[str, Any]) -> str:
    """A dry run's estimate, in a few lines for a terminal."""
    cost = (f"; estimated cost: {d['estimated_cost']:.4f} {PRICE_UNIT}" if d["estimated_cost"] is not None
            else " (no prices in the judge config)")
    lines = [f"{d['pairs']} pairs: {d['calls']} judge calls to make, {d['cached']} already cached",
             f"estimated tokens: ~{d['tokens']['prompt']} in, up to {d['tokens']['completion']} out{cost}"]
    if d["ranked_rows"]:
        lines.append(f"{d['ranked_rows']} rows with more than two candidates: up to {d['ranking_calls_at_most']} more calls to rank them "
                     "(counted above: none)")
    if d["prompt_only_rows"]:
        lines.append(f"{d['prompt_only_rows']} prompt-only rows need candidates generated first; their calls are not counted")
    return "\n".join(lines)


def run_summary(m: dict[str, Any], out: Path) -> str:
    """What a finished run did, from its manifest, in a few lines for a terminal."""
    counts, rate, v = m["counts"], m["first_position_rate"], m["verdicts"]
    how = ("pointwise: each response scored alone, one call per distinct response" if m["mode"] == "pointwise"
           else f"consistent across orders: {counts['consistent']}, inconsistent: {counts['inconsistent']}")
    lines = [f"labeled {counts['labeled']} of {counts['pairs']} pairs -> {out / PAIRS}",
             (f"{how}; skipped: {sum(counts['skipped'].values())}; failed: {sum(counts['failed'].values())}; "
              f"filtered: {sum(counts['filtered'].values())}")]
    if (r := m.get("ranking")) is not None:
        lines.append(f"ranked {r['rows']} rows of more than two candidates ({r['strategy']}, --pairs {r['pairs']}): "
                     f"{r['calls_per_row']:.1f} judge calls a row (budget: {r['max_calls_per_prompt'] or 'default'}); "
                     f"unseparated pairs left out: {r['unseparated']}; "
                     f"intransitive triples: {r['intransitive_triples']} -> {out / RANKINGS}")
    if rate["raw"] is not None:
        final = "n/a" if rate["labels"] is None else f"{100 * rate['labels']:.1f}%"
        lines.append(f"first-position rate: raw judgments {100 * rate['raw']:.1f}%, final labels {final}")
    cost = f"; estimated cost: {m['estimated_cost']:.4f} {PRICE_UNIT}" if m["estimated_cost"] is not None else ""
    lines.append(f"judge calls: {m['judge_calls']['made']} made, {m['judge_calls']['cached']} from cache; "
                 f"tokens: {m['tokens']['prompt']} in, {m['tokens']['completion']} out; {m['wall_time_s']:.1f}s{cost}")
    lines.append(f"verdicts: {v['soft']} soft (label probabilities), {v['unreadable']} unreadable, of {m['judge_calls']['total']} answers")
    return "\n".join(lines)
