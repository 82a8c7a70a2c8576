"""`report.md` of `rlaif compare`: one table to take in at a glance, then a short paragraph per
finding in plain words. Every number comes from `metrics.json` beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlaif.evaluate.ratings import format_ratings
from rlaif.labeling.quality import lift_text
from rlaif.storage.files import write_text_atomic

Z95 = 1.959963984540054
METRICS = (("meteor", "METEOR"), ("bleu1", "BLEU-1"), ("bleu2", "BLEU-2"), ("bleu3", "BLEU-3"), ("bleu4", "BLEU-4"),
           ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("rougeLsum", "ROUGE-Lsum"), ("bertscore", "BERTScore"))


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "n/a"


def win_rate_cell(matchup: dict[str, Any]) -> str:
    """A win rate with its 95% interval."""
    return f"{pct(matchup['win_rate'])} [{pct(matchup['low'])}, {pct(matchup['high'])}]"


def kl_cell(policy: dict[str, Any]) -> str:
    """A policy's KL to the base with its standard error over prompts."""
    return f"{policy['kl_to_base']:.2f} ± {policy['kl_to_base_se']:.2f}"


def summary_table(metrics: dict[str, Any]) -> list[str]:
    gold = any("gold_reward" in p for p in metrics["policies"].values())
    head = ["policy", "trained on", "win rate vs base [95% CI]", "LC win rate", "BT rating [95% CI]"] + (["gold reward", "Δ gold vs base ± SE"] if gold else []) + ["KL to base ± SE", "length (tokens)", "distinct-2"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, p in metrics["policies"].items():
        m = metrics["matchups"].get(f"{name} vs base")
        cells = [f"`{name}`", p["trained_on"], win_rate_cell(m) if m else "—", pct(m["lc_win_rate"]) if m else "—"]
        r = metrics["ratings"]["players"][name]
        cells.append(f"{r['bt']:.0f} [{r['bt_low']:.0f}, {r['bt_high']:.0f}]")
        if gold:
            d = m.get("gold_reward_difference") if m else None
            cells += [num(p["gold_reward"]), f"{d['difference']:+.3f} ± {d['se']:.3f}" if d else "—"]
        cells += [kl_cell(p), num(p["mean_length"], 1), num(p["distinct_2"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


HOW_JUDGED = {"pairwise": "pairwise, both orders", "pointwise": "pointwise, each response scored alone", "jury": "a jury: its members' preferences combined"}
TIES = {"pairwise": "the judge's two orders disagreed", "pointwise": "the two responses scored the same",
        "jury": "the panel's preference was exactly ½"}


def findings(metrics: dict[str, Any]) -> list[str]:
    judge = metrics["judge"]["name"]
    out = []
    for name, m in metrics["matchups"].items():
        a, b = name.split(" vs ")
        if m["low"] <= 0.5 <= m["high"]:
            verdict = f"**no measurable difference** between `{a}` and `{b}` by the {judge} judge: win rate {pct(m['win_rate'])}, and its 95% interval [{pct(m['low'])}, {pct(m['high'])}] includes 50%"
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
                out.append(f"- Gold reward, `{a}` against `{b}`: **no measurable difference** ({d['difference']:+.3f} ± {d['se']:.3f} standard error; the 95% interval includes 0).")
            else:
                out.append(f"- Gold reward, `{a}` against `{b}`: **{'higher' if d['difference'] > 0 else 'lower'}** by {abs(d['difference']):.3f} (± {d['se']:.3f} standard error).")
    for name, r in metrics["labels"].items():
        chance = r["agreement_low"] <= 0.5 <= r["agreement_high"]
        line = (f"- The labels in `{name}` ({r.get('judge')} judge, {r.get('rubric')} rubric) agree with the human annotators on {pct(r['agreement'])} of "
                f"{r['with_human_label']} pairs [95% CI {pct(r['agreement_low'])}, {pct(r['agreement_high'])}], kappa {num(r['cohen_kappa'])}; "
                f"the judge preferred the response shown first in {pct(r['first_position_rate_raw'])} of its calls.")
        if chance:
            line += (" That is **chance level**: a policy trained on these labels learns from labels no better than coin flips, so it should not be "
                     "expected to beat one trained on the human labels of the same pairs.")
        out.append(line)
    for name, r in metrics["reward_models"].items():
        if "accuracy" in r:
            out.append(f"- Reward model `{name}` ranks the human-preferred response higher on {pct(r['accuracy'])} of {r['pairs']} evaluation pairs [95% CI {pct(r['low'])}, {pct(r['high'])}]"
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
        notes.append(f"BERTScore is computed with {metrics['bertscore_model']}, not the usual roberta-large: compare it within this table only.")
    return lines + [""] + notes


def write_report(out: Path, metrics: dict[str, Any]) -> None:
    d = metrics["decoding"]
    lines = [
        f"# rlaif compare: {len(metrics['policies']) - 1} policies and their base on {metrics['prompts']} prompts",
        "",
        (f"Judge: {metrics['judge']['name']} ({metrics['judge']['rubric']} rubric, {HOW_JUDGED[metrics['judge']['mode']]}). Decoding: {d['samples']} sample(s) per prompt, "
        f"temperature {d['temperature']}, up to {d['max_new_tokens']} new tokens, seed {d['seed']}. Every number is in `metrics.json`, "
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
        head = ("| label run | judge | agreement [95% CI] | best trivial rule | lift over it [95% CI, paired] | kappa | ECE of ai_preference "
                "| consistent across orders | first-position rate |")
        lines += ["", "## AI labels against human labels", "", head, "|---|---|---|---|---|---|---|---|---|"]
        for name, r in metrics["labels"].items():
            lift = r.get("lift_over_best_baseline")
            best = f"{lift['baseline']}: {pct(r['baselines'][lift['baseline']]['agreement'])}" if lift else "—"
            lines.append(f"| `{name}` | {r.get('judge')} | {pct(r['agreement'])} [{pct(r['agreement_low'])}, {pct(r['agreement_high'])}] | {best} | "
                         f"{lift_text(lift).rsplit(' over ', 1)[0] if lift else '—'} | {num(r['cohen_kappa'])} | {num(r.get('calibration', {}).get('ece'))} | "
                         f"{pct(r['consistency_rate'])} | {pct(r['first_position_rate_raw'])} |")
    if metrics["reward_models"]:
        lines += ["", "## Reward models on the evaluation pairs", "", "| reward model | accuracy [95% CI] | pairs |", "|---|---|---|"]
        for name, r in metrics["reward_models"].items():
            lines.append(f"| `{name}` | {pct(r['accuracy'])} [{pct(r['low'])}, {pct(r['high'])}] | {r['pairs']} |" if "accuracy" in r else f"| `{name}` | {r['unavailable']} | |")
    lines += ["", "## Ratings", "", format_ratings(metrics["ratings"])]
    lines += ["", "## Figures", "", *(f"![{f}]({f})" for f in metrics.get("figures", []))]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
