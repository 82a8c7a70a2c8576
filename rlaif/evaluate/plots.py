"""The figures of `rlaif compare` (matplotlib, written as PNG files beside the report)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlaif.stats import Z95


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    return plt


def write_figures(out: Path, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Write every figure the metrics allow; returns their file names."""
    plt = _pyplot()
    written = []

    matchups = metrics["matchups"]
    if matchups:
        fig, ax = plt.subplots(figsize=(7, 0.7 * len(matchups) + 1.5))
        names = list(matchups)
        rates = [matchups[n]["win_rate"] for n in names]
        errors = [[r - matchups[n]["low"] for r, n in zip(rates, names)], [matchups[n]["high"] - r for r, n in zip(rates, names)]]
        ax.errorbar(rates, range(len(names)), xerr=errors, fmt="o", capsize=4, label="win rate (ties half), 95% interval")
        lc = [(i, matchups[n]["lc_win_rate"]) for i, n in enumerate(names) if matchups[n]["lc_win_rate"] is not None]
        if lc:
            ax.plot([v for _, v in lc], [i for i, _ in lc], "x", color="tab:red", label="length-controlled")
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.6, len(names) - 0.4)  # every row, its marker and interval whole
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"win rate by the {metrics['judge']['name']} judge")
        ax.legend(loc="lower right", fontsize=8)
        written.append(_save(fig, out / "win_rates.png"))

    policies = metrics["policies"]
    if all("gold_reward" in p for p in policies.values()):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name, p in policies.items():
            gold_half, kl_half = (Z95 * se if math.isfinite(se) else 0.0 for se in (p["gold_reward_se"], p["kl_to_base_se"]))
            ax.errorbar(p["kl_to_base"], p["gold_reward"], xerr=kl_half, yerr=gold_half, fmt="o", capsize=4)
            ax.annotate(name, (p["kl_to_base"], p["gold_reward"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.axvline(0, color="grey", linestyle="--", linewidth=1)
        ax.text(0.01, 0.01, "bars: 95% intervals over prompts (a KL below 0 is noise around 0)", transform=ax.transAxes,
                fontsize=7, color="grey")
        ax.set_xlabel("KL to the base (nats per response)")
        ax.set_ylabel("mean gold reward")
        ax.set_title("gold reward against KL")
        written.append(_save(fig, out / "reward_vs_kl.png"))

    for name, report in metrics["labels"].items():
        fig, ax = plt.subplots(figsize=(4.5, 4))
        matrix = report["confusion"]
        ax.imshow(matrix, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=14)
        ax.set_xticks([0, 1], ["first", "second"])
        ax.set_yticks([0, 1], ["first", "second"])
        ax.set_xlabel("the AI label prefers the response shown …")
        ax.set_ylabel("the human prefers …")
        ax.set_title(f"{name}: agreement {100 * report['agreement']:.0f}%")
        written.append(_save(fig, out / f"confusion_{name}.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    lengths = {name: [r["tokens"] for r in rows if r["policy"] == name] for name in policies}
    ax.hist(list(lengths.values()), bins=20, label=list(lengths), alpha=0.8)
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel("responses")
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "lengths.png"))
    return written


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    _pyplot().close(fig)
    return path.name


def reliability_diagram(path: Path, bins: list[dict[str, float]], title: str) -> str:
    """How often the judge agrees with the humans at each level of its confidence: one point per
    bin (its mean ai_preference against its agreement, with a 95% Wilson interval and its
    count); a calibrated judge's points lie on the diagonal."""
    from rlaif.stats import wilson_interval

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.5, 1], [0.5, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    conf, acc = [b["confidence"] for b in bins], [b["accuracy"] for b in bins]
    intervals = [wilson_interval(round(b["accuracy"] * b["n"]), int(b["n"])) for b in bins]
    # max(0, …): at an agreement of 0 or 1 the interval's end meets the point, up to rounding
    ax.errorbar(conf, acc, yerr=[[max(0.0, a - lo) for a, (lo, _) in zip(acc, intervals)],
                                 [max(0.0, hi - a) for a, (_, hi) in zip(acc, intervals)]],
                fmt="o", capsize=4, label="agreement with humans, 95% interval")
    for c, a, b in zip(conf, acc, bins):
        ax.annotate(f"n={int(b['n'])}", (c, a), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xlim(0.48, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("ai_preference (the judge's confidence)")
    ax.set_ylabel("share of pairs where the humans agree")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)
