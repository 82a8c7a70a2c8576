"""`report.md` of `rlaif compare`: one table to take in at a glance, then a short paragraph per
finding in plain words. Every number comes from `metrics.json` beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.evaluate.ratings import format_ratings
from rlaif.labeling.quality import lift_text
from rlaif.stats import Z95
from rlaif.storage.files import write_text_atomic

METRICS = (("meteor", "METEOR"), ("bleu1", "BLEU-1"), ("bleu2", "BLEU-2"), ("bleu3", "BLEU-3"), ("bleu4", "BLEU-4"),
           ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("rougeLsum", "ROUGE-Lsum"), ("bertscore", "BERTScore"))


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "n/a"


def win_rate_cell(matchup: dict[str, Any]) -> str:
    """A win rate with its 95% interval."""
    return f"{pct(matchup['win_rate'])} [{pct(matchup['low'])}, {pct(matchup['high'])}]"


@dataclass(frozen=True)
class Row:
    """What a table's cells read of one policy: its metrics, its matchup against the base (None
    for the base itself) and its ratings."""

    name: str
    policy: dict[str, Any]
    matchup: dict[str, Any] | None
    rating: dict[str, Any]


@dataclass(frozen=True)
class Column:
    """A column of a policy table: its header (`{base}` names what the policies are measured
    against) and its cell; `gold` columns appear only when the policies have gold rewards."""

    header: str
    cell: Callable[[Row], str]
    gold: bool = False


def _gold_difference(row: Row) -> str:
    d = row.matchup.get("gold_reward_difference") if row.matchup else None
    return f"{d['difference']:+.3f} ± {d['se']:.3f}" if d else "—"


# Every column a policy table may show, in the order tables show them: `rlaif compare`'s report
# and `rlaif iterate`'s rounds.md pick from these, so a new column is one entry here.
COLUMNS = {
    "win_rate": Column("win rate vs {base} [95% CI]", lambda row: win_rate_cell(row.matchup) if row.matchup else "—"),
    "lc_win_rate": Column("LC win rate", lambda row: pct(row.matchup["lc_win_rate"]) if row.matchup else "—"),
    "rating": Column("BT rating [95% CI]", lambda row: f"{row.rating['bt']:.0f} [{row.rating['bt_low']:.0f}, {row.rating['bt_high']:.0f}]"),
    "rating_point": Column("BT rating", lambda row: f"{row.rating['bt']:.0f}"),
    "gold_reward": Column("gold reward", lambda row: num(row.policy.get("gold_reward")), gold=True),
    "gold_difference": Column("Δ gold vs {base} ± SE", _gold_difference, gold=True),
    "kl": Column("KL to {base} ± SE", lambda row: f"{row.policy['kl_to_base']:.2f} ± {row.policy['kl_to_base_se']:.2f}"),
    "length": Column("length (tokens)", lambda row: num(row.policy["mean_length"], 1)),
    "distinct_2": Column("distinct-2", lambda row: num(row.policy["distinct_2"])),
}
SUMMARY = ("win_rate", "lc_win_rate", "rating", "gold_reward", "gold_difference", "kl", "length", "distinct_2")


def policy_table(metrics: dict[str, Any], lead: list[tuple[str, Callable[[Row], str]]], columns: tuple[str, ...],
                 base: str = "base") -> list[str]:
    """A Markdown table with a row per policy: the `lead` columns (header, cell), then `columns`
    (keys of COLUMNS), the gold ones only where the policies have gold rewards."""
    gold = any("gold_reward" in p for p in metrics["policies"].values())
    chosen = [COLUMNS[key] for key in columns if gold or not COLUMNS[key].gold]
    head = [header for header, _ in lead] + [c.header.format(base=base) for c in chosen]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, p in metrics["policies"].items():
        row = Row(name, p, metrics["matchups"].get(f"{name} vs base"), metrics["ratings"]["players"][name])
        lines.append("| " + " | ".join([cell(row) for _, cell in lead] + [c.cell(row) for c in chosen]) + " |")
    return lines


def summary_table(metrics: dict[str, Any]) -> list[str]:
    return policy_table(metrics, [("policy", lambda row: f"`{row.name}`"), ("trained on", lambda row: row.policy["trained_on"])], SUMMARY)


HOW_JUDGED = {"pairwise": "pairwise, both orders", "pointwise": "pointwise, each response scored alone",
              "jury": "a jury: its members' preferences combined"}
TIES = {"pairwise": "the judge's two orders disagreed", "pointwise": "the two responses scored the same",
        "jury": "the panel's preference was exactly ½"}


def findings(metrics: dict[str, Any]) -> list[str]:
    judge = metrics["judge"]["name"]
    out = []
    for name, m in metrics["matchups"].items():
        a, b = name.split(" vs ")
        if m["low"] <= 0.5 <= m["high"]:
            verdict = (f"**no measurable difference** between `{a}` and `{b}` by the {judge} judge: win rate {pct(m['win_rate'])}, "
                       f"and its 95% interval [{pct(m['low'])}, {pct(m['high'])}] includes 50%")
        else:
            side = "wins over" if m["win_rate"] > 0.5 else "loses to"
            verdict = f"`{a}` **{side}** `{b}` by the {judge} judge: win rate {pct(m['win_rate'])} [{pct(m['low'])}, {pct(m['high'])}]"
        ties = f"{pct(m['ties'])} of the {m['comparisons']} comparisons were ties ({TIES[metrics['judge']['mode']]})"
        lc = "" if m["lc_win_rate"] is None else f"; at equal length the fit predicts {pct(m['lc_win_rate'])}"
        out.append(f"- {verdict}. {ties}{lc}." + (f" {m['failed']} comparisons failed to get a verdict." if m["failed"] else ""))
    for name, m in metrics["matchups"].items():
        d = m.get("gold_reward_difference")
        if d:
            a, b = name.split(" vs ")
            low, high = d["difference"] - Z95 * d["se"], d["difference"] + Z95 * d["se"]
            if low <= 0 <= high:
                out.append(f"- Gold reward, `{a}` against `{b}`: **no measurable difference** "
                           f"({d['difference']:+.3f} ± {d['se']:.3f} standard error; the 95% interval includes 0).")
            else:
                out.append(f"- Gold reward, `{a}` against `{b}`: **{'higher' if d['difference'] > 0 else 'lower'}** "
                           f"by {abs(d['difference']):.3f} (± {d['se']:.3f} standard error).")
    for name, r in metrics["labels"].items():
        chance = r["agreement_low"] <= 0.5 <= r["agreement_high"]
        line = (f"- The labels in `{name}` ({r.get('judge')} judge, {r.get('rubric')} rubric) "
                f"agree with the human annotators on {pct(r['agreement'])} of {r['with_human_label']} pairs "
                f"[95% CI {pct(r['agreement_low'])}, {pct(r['agreement_high'])}], kappa {num(r['cohen_kappa'])}; "
                f"the judge preferred the response shown first in {pct(r['first_position_rate_raw'])} of its calls.")
        if chance:
            line += (" That is **chance level**: a policy trained on these labels learns from labels no better than "
                     "coin flips, so it should not be expected to beat one trained on the human labels of the same pairs.")
        out.append(line)
    for name, r in metrics["reward_models"].items():
        if "accuracy" in r:
            out.append(f"- Reward model `{name}` ranks the human-preferred response higher on {pct(r['accuracy'])} "
                       f"of {r['pairs']} evaluation pairs [95% CI {pct(r['low'])}, {pct(r['high'])}]"
                       + (" — **no better than chance**, so its scores say little." if r["low"] <= 0.5 else "."))
    return out


def reference_table(metrics: dict[str, Any]) -> list[str]:
    rows = [(name, p["reference_metrics"]) for name, p in metrics["policies"].items() if "reference_metrics" in p]
    if not rows:
        return []
    lines = ["| policy | " + " | ".join(label for _, label in METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for name, m in rows:
        lines.append(f"| `{name}` | " + " | ".join(num(m[key], 4) if isinstance(m[key], float) else "n/a" for key, _ in METRICS) + " |")
    missing = {label: m[key]["unavailable"] for _, m in rows for key, label in METRICS if isinstance(m[key], dict)}
    notes = [f"{label}: not computed, {why}." for label, why in missing.items()]
    if metrics["bertscore_model"]:
        notes.append(f"BERTScore is computed with {metrics['bertscore_model']}, not the usual roberta-large: "
                     "compare it within this table only.")
    return lines + [""] + notes


def write_report(out: Path, metrics: dict[str, Any]) -> None:
    d = metrics["decoding"]
    lines = [
        f"# rlaif compare: {len(metrics['policies']) - 1} policies and their base on {metrics['prompts']} prompts",
        "",
        (f"Judge: {metrics['judge']['name']} ({metrics['judge']['rubric']} rubric, {HOW_JUDGED[metrics['judge']['mode']]}). "
        f"Decoding: {d['samples']} sample(s) per prompt, temperature {d['temperature']}, up to {d['max_new_tokens']} new tokens, "
        f"seed {d['seed']}. Every number is in `metrics.json`, "
        "with the file it came from (`responses.jsonl`, `judgments.jsonl`, the label runs)."),
        "",
        *summary_table(metrics),
        "",
        "## Findings",
        "",
        *findings(metrics),
    ]
    ref = reference_table(metrics)
    if ref:
        lines += ["", "## Against the human-preferred responses: ROUGE, BLEU, METEOR, BERTScore", "", *ref]
    if metrics["labels"]:
        head = ("| label run | judge | agreement [95% CI] | best trivial rule | lift over it [95% CI, paired] | kappa "
                "| ECE of ai_preference | consistent across orders | first-position rate |")
        lines += ["", "## AI labels against human labels", "", head, "|---|---|---|---|---|---|---|---|---|"]
        for name, r in metrics["labels"].items():
            lift = r.get("lift_over_best_baseline")
            best = f"{lift['baseline']}: {pct(r['baselines'][lift['baseline']]['agreement'])}" if lift else "—"
            lines.append(f"| `{name}` | {r.get('judge')} | {pct(r['agreement'])} "
                         f"[{pct(r['agreement_low'])}, {pct(r['agreement_high'])}] | {best} | "
                         f"{lift_text(lift).rsplit(' over ', 1)[0] if lift else '—'} | {num(r['cohen_kappa'])} | "
                         f"{num(r.get('calibration', {}).get('ece'))} | {pct(r['consistency_rate'])} | "
                         f"{pct(r['first_position_rate_raw'])} |")
    if metrics["reward_models"]:
        lines += ["", "## Reward models on the evaluation pairs", "", "| reward model | accuracy [95% CI] | pairs |", "|---|---|---|"]
        for name, r in metrics["reward_models"].items():
            lines.append(f"| `{name}` | {pct(r['accuracy'])} [{pct(r['low'])}, {pct(r['high'])}] | {r['pairs']} |" if "accuracy" in r
                         else f"| `{name}` | {r['unavailable']} | |")
    lines += ["", "## Ratings", "", format_ratings(metrics["ratings"])]
    lines += ["", "## Figures", "", *(f"![{f}]({f})" for f in metrics.get("figures", []))]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
