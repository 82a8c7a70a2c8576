"""How good a labeling run's labels are: agreement with the human labels its rows carry (beside
trivial rules that need no judge, with the judge's lift over the best of them), calibration of
`ai_preference`, and the judge's position and length biases."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any

import jsonlines

from rlaif.errors import InputError
from rlaif.stats import cohen_kappa, expected_calibration_error, fleiss_kappa, paired_interval, wilson_interval
from rlaif.storage.locks import holder


def _text(value: Any) -> str:
    return value[-1]["content"] if isinstance(value, list) else value


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _verdicts(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The answers behind a row: its orders or scores (a jury's: every member's)."""
    if "members" in row:
        return [v for m in row["members"] for v in _verdicts(m)]
    return row.get("orders", row.get("scores", []))


def _first_won(row: dict[str, Any]) -> bool:
    """The AI label in a fixed orientation, as kappa needs one: did the response shown first in
    the first order win (pairwise), or response A (pointwise); a jury's, by its first member's."""
    if "members" in row:
        return _first_won(row["members"][0])
    return (row["orders"][0]["first"] if "orders" in row else row["scores"][0]["response"]) == "chosen"


def baselines(human: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per human-labeled row, whether each trivial rule agrees with the human (½ where a rule
    cannot choose: two responses of one length): always the longer response, always the
    shorter, always the one shown first (the first order's first; pointwise, response A)."""
    out: dict[str, list[float]] = {"always the longer response": [], "always the shorter response": [], "always the one shown first": []}
    for r in human:
        chosen_longer = len(_text(r["chosen"])) - len(_text(r["rejected"]))
        human_chose_chosen = r["human_preference"] > 0.5
        longer = 0.5 if chosen_longer == 0 else float((chosen_longer > 0) == human_chose_chosen)
        out["always the longer response"].append(longer)
        out["always the shorter response"].append(0.5 if chosen_longer == 0 else 1.0 - longer)
        out["always the one shown first"].append(float(_first_won(r) == human_chose_chosen))
    return out


def _member_agrees(p_chosen: float, human_preference: float) -> float:
    """1 where a jury member's pick is the humans', 0 where not, ½ where it had none (p = ½)."""
    return 0.5 if p_chosen == 0.5 else float((p_chosen > 0.5) == (human_preference > 0.5))


def jury_report(rows: list[dict[str, Any]], human: list[dict[str, Any]]) -> dict[str, Any]:
    """A jury's members beside its panel: each member's agreement with humans (95% Wilson
    interval) and calibration error, the panel's lift over its best member (paired), and how
    far the members agree with one another (Fleiss' kappa over their votes, on the pairs where
    none of them was exactly undecided)."""
    first = rows[0]["members"]
    panel = [float(r["human_preference"] > 0.5) for r in human]
    members, agrees_by_member = [], []
    for i, m in enumerate(first):
        agrees = [_member_agrees(r["members"][i]["p_chosen"], r["human_preference"]) for r in human]
        agrees_by_member.append(agrees)
        low, high = wilson_interval(sum(agrees), len(agrees)) if human else (None, None)  # type: ignore[arg-type]
        confidence = [max(q, 1 - q) for q in (r["members"][i]["p_chosen"] for r in human)]
        members.append({"judge": m["judge"], "mode": m["mode"], "weight": m["weight"], "agreement": mean(agrees) if human else None,
                        "agreement_low": low, "agreement_high": high,
                        "ece": expected_calibration_error(confidence, agrees)[0] if human else None})
    votes = [[m["p_chosen"] > 0.5 for m in r["members"]] for r in rows if all(m["p_chosen"] != 0.5 for m in r["members"])]
    report: dict[str, Any] = {"members": members, "fleiss_kappa": fleiss_kappa(votes),
                              "unanimous": _rate([len(set(v)) == 1 for v in votes]), "pairs_with_every_vote": len(votes),
                              "panel_lift_over_best_member": None}
    if len(human) > 1:
        best = max(range(len(members)), key=lambda i: members[i]["agreement"])
        report["panel_lift_over_best_member"] = {"member": members[best]["judge"], **paired_interval(panel, agrees_by_member[best])}
    return report


def agreement_report(rows: list[dict[str, Any]], manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Agreement with humans (overall with its 95% Wilson interval, on consistent and
    inconsistent pairs), kappa and the confusion matrix behind it, consistency and biases."""
    human = [r for r in rows if r.get("human_preference") is not None]
    agrees = [r["human_preference"] > 0.5 for r in human]
    ai_first = [_first_won(r) for r in human]
    human_first = [a == h for a, h in zip(ai_first, agrees)]
    confusion = [[0, 0], [0, 0]]  # [human: first, second][AI: first, second]
    for a, h in zip(ai_first, human_first):
        confusion[0 if h else 1][0 if a else 1] += 1
    low, high = wilson_interval(sum(agrees), len(agrees))
    longer = [len(_text(r["chosen"])) > len(_text(r["rejected"])) for r in rows if len(_text(r["chosen"])) != len(_text(r["rejected"]))]
    human_longer = [
        (len(_text(r["chosen"])) > len(_text(r["rejected"]))) == (r["human_preference"] > 0.5)
        for r in human if len(_text(r["chosen"])) != len(_text(r["rejected"]))
    ]
    both_orders = [r for r in rows if r["consistent"] is not None]
    modes = sorted({r.get("mode", "pairwise") for r in rows})
    report = {
        "mode": "/".join(modes) or None,
        "pairs": len(rows),
        "with_human_label": len(human),
        "agreement": _rate(agrees),
        "agreement_low": low if human else None,
        "agreement_high": high if human else None,
        "agreement_consistent": _rate([a for a, r in zip(agrees, human) if r["consistent"] is True]),
        "agreement_inconsistent": _rate([a for a, r in zip(agrees, human) if r["consistent"] is False]),
        "n_consistent": sum(r["consistent"] is True for r in human),
        "n_inconsistent": sum(r["consistent"] is False for r in human),
        "cohen_kappa": cohen_kappa(zip(ai_first, human_first)),
        "confusion": confusion,
        # None pointwise: no order to be consistent across, nothing shown first.
        "consistency_rate": _rate([r["consistent"] is True for r in both_orders]),
        "first_position_rate_raw": _rate([v["p_first"] > 0.5 for r in rows for v in _verdicts(r) if "p_first" in v]),
        "first_position_rate_labels": _rate([r["orders"][0]["first"] == "chosen" for r in rows if "orders" in r]),
        "length_bias_ai": _rate(longer),
        "length_bias_human": _rate(human_longer),
        "mean_ai_preference": _rate([r["ai_preference"] for r in rows]),
    }
    if human:
        judge = [float(a) for a in agrees]
        per_row = baselines(human)
        rules = {name: {"agreement": mean(values)} for name, values in per_row.items()}
        best = max(rules, key=lambda name: rules[name]["agreement"])
        report["baselines"] = rules
        # The same pairs for the judge and the rule, so the lift's interval is a paired one.
        report["lift_over_best_baseline"] = {"baseline": best, **paired_interval(judge, per_row[best])} if len(human) > 1 else None
        ece, bins = expected_calibration_error([r["ai_preference"] for r in human], judge)
        report["calibration"] = {"ece": ece, "bins": bins}
    if rows and "members" in rows[0]:
        report["jury"] = jury_report(rows, human)
    verdicts = [v for r in rows for v in _verdicts(r)]
    report["soft_share"] = _rate([v["soft"] for v in verdicts])  # of the verdicts behind the labeled pairs
    report["unreadable_share"] = None  # of every answer of the run, failed pairs' too: the manifest counts them
    if manifest:
        report["judge"] = manifest.get("judge", {}).get("name")
        if "jury" in report:
            report["jury"]["combine"] = manifest["judge"]["options"].get("combine")
        report["rubric"] = (manifest.get("rubric") or {}).get("name")
        report["unreadable_share"] = (manifest.get("verdicts") or {}).get("unreadable_share")
    return report


def read_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A finished labeling run's rows (`pairs.jsonl`) and its manifest. A run another process is
    writing, or one that has not finished, is an error that says so."""
    run_dir = Path(run_dir)
    pairs_path = run_dir / "pairs.jsonl"
    if not pairs_path.exists():
        raise InputError(str(pairs_path), None, None, f"no such file (is {run_dir} the output of `rlaif label`?)")
    if (running := holder(run_dir)) is not None:
        raise InputError(str(run_dir), None, None, f"a labeling run is still writing it ({running}): read it once that run has ended")
    if not (run_dir / "manifest.json").exists():
        raise InputError(str(run_dir), None, None, "the labeling run has not finished (no manifest.json): run its `rlaif label` command "
                                                   "again to finish it, then read it")
    with jsonlines.open(pairs_path) as reader:
        rows = list(reader)
    return rows, json.loads((run_dir / "manifest.json").read_text())


def label_run_report(run_dir: str | Path) -> dict[str, Any]:
    """The report of a labeling run directory (its `pairs.jsonl` and `manifest.json`)."""
    return agreement_report(*read_run(run_dir))


def lift_text(lift: dict[str, Any]) -> str:
    """The judge's lift over a baseline in points, with its paired interval."""
    return f"{100 * lift['difference']:+.1f} points [{100 * lift['low']:+.1f}, {100 * lift['high']:+.1f}] over {lift['baseline']!r}"


def _jury_lines(jury: dict[str, Any], pct: Any) -> list[tuple[str, str]]:
    lines = [(f"jury member {m['judge']} ({m['mode']}, weight {m['weight']:g})",
              f"{pct(m['agreement'])} [{pct(m['agreement_low'])}, {pct(m['agreement_high'])}]"
              + ("" if m["ece"] is None else f", ECE {m['ece']:.3f}"))
             for m in jury["members"]]
    if (lift := jury["panel_lift_over_best_member"]) is not None:
        lines.append((f"panel ({jury.get('combine')}) over its best member [95% CI]",
                      (f"{100 * lift['difference']:+.1f} points [{100 * lift['low']:+.1f}, {100 * lift['high']:+.1f}] "
                       f"over {lift['member']!r}")))
    kappa = "n/a" if jury["fleiss_kappa"] is None else f"{jury['fleiss_kappa']:.3f}"
    lines.append(("members' agreement: Fleiss' kappa",
                  f"{kappa} (unanimous on {pct(jury['unanimous'])} of {jury['pairs_with_every_vote']} pairs)"))
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as an aligned two-column table."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [
        ("judge / rubric / mode", f"{report.get('judge')} / {report.get('rubric') or 'no rubric'} / {report['mode']}"),
        ("pairs (with a human label)", f"{report['pairs']} ({report['with_human_label']})"),
        ("agreement with humans [95% CI]", f"{pct(report['agreement'])} [{pct(report['agreement_low'])}, {pct(report['agreement_high'])}]"),
        (f"  on consistent pairs (n={report['n_consistent']})", pct(report["agreement_consistent"])),
        (f"  on inconsistent pairs (n={report['n_inconsistent']})", pct(report["agreement_inconsistent"])),
        ("Cohen's kappa", "n/a" if report["cohen_kappa"] is None else f"{report['cohen_kappa']:.3f}"),
        ("consistency across orders", pct(report["consistency_rate"])),
        ("first-position rate, raw judgments", pct(report["first_position_rate_raw"])),
        ("first-position rate, final labels", pct(report["first_position_rate_labels"])),
        ("prefers the longer response: AI", pct(report["length_bias_ai"])),
        ("prefers the longer response: humans", pct(report["length_bias_human"])),
        ("mean ai_preference", "n/a" if report["mean_ai_preference"] is None else f"{report['mean_ai_preference']:.3f}"),
        *[(f"baseline: {name}", pct(b["agreement"])) for name, b in report.get("baselines", {}).items()],
        *([("lift over the best baseline [95% CI]", lift_text(lift))] if (lift := report.get("lift_over_best_baseline")) else []),
        *([("expected calibration error of ai_preference", f"{report['calibration']['ece']:.3f}")] if report.get("calibration") else []),
        *([("reliability diagram", report["reliability_diagram"])] if report.get("reliability_diagram") else []),
        *(_jury_lines(report["jury"], pct) if report.get("jury") else []),
        ("judge answers with no readable verdict", pct(report["unreadable_share"])),
        ("soft verdicts (label probabilities)", pct(report["soft_share"])),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)
