"""Draws the README's figure: agreement with the human labels of held-out HH-harmless pairs
600-999, for the embedded judge, a trivial rule, the reward-model judge and a jury of both
judges, with 95% Wilson intervals.

It runs no model. The counts below are the measured results written in docs/benchmarks.md;
each comment names the command that measured it.

Usage: python bench/readme_figure.py [--output docs/figures/judges-vs-human-labels.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlaif.stats import wilson_interval

# (label, pairs that agree with the human choice, pairs judged)
RESULTS = [
    # `rlaif label --input 'examples/hh-harmless.jsonl.gz?rows=600:1000' --output outputs/hh-embedded`,
    # then `rlaif agreement outputs/hh-embedded`: "47.6% [42.8%, 52.5%]" of 399 pairs: 190.
    ("embedded judge\n(SmolLM2-135M,\nboth orders)", 190, 399),
    # `rlaif agreement outputs/hh-rm-judge` printed "prefers the longer response: humans 44.4%"
    # over the 399 pairs (no pair has two responses of equal length), so the humans chose the
    # shorter response in 222 of 399: the rule's agreement.
    ("always pick the\nshorter response", 222, 399),
    # `make rm-judge` at b187155: "agreement with humans [95% CI] 59.9% [55.0%, 64.6%]" over 399 pairs: 239.
    ("reward-model judge\n(a head on the embedded\nmodel, whole sequences,\ntrained on pairs 0-599)", 239, 399),
    # `make jury` right after it, with that reward model: "agreement with humans [95% CI] 58.6% [53.8%, 63.4%]" over 399 pairs: 234.
    ("jury: that reward\nmodel and the\nembedded judge, their\npreferences averaged", 234, 399),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/figures/judges-vs-human-labels.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _, _ in RESULTS]
    rates = [100 * k / n for _, k, n in RESULTS]
    intervals = [wilson_interval(k, n) for _, k, n in RESULTS]
    low = [r - 100 * lo for r, (lo, _) in zip(rates, intervals)]
    high = [100 * hi - r for r, (_, hi) in zip(rates, intervals)]

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colors = ["#9e9e9e", "#c7a35a", "#3b7dd8", "#6a9c58"]
    ax.bar(range(len(RESULTS)), rates, color=colors, width=0.6, yerr=[low, high], capsize=6, ecolor="#333333")
    ax.axhline(50, color="#555555", linestyle="--", linewidth=1)
    ax.text(-0.45, 50.8, "coin flip", ha="left", va="bottom", fontsize=8, color="#555555")
    for i, ((_, k, n), rate, (lo, hi)) in enumerate(zip(RESULTS, rates, intervals)):
        ax.text(i, 100 * hi + 1.0, f"{rate:.1f}%\n[{100 * lo:.1f}, {100 * hi:.1f}]\n{k}/{n}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(RESULTS)), labels, fontsize=8)
    ax.set_ylim(0, 80)
    ax.set_ylabel("agrees with the human label (%)")
    ax.set_title("HH-harmless pairs 600-999 (held out): agreement with the human annotators\n"
                 "(error bars: 95% Wilson intervals)", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    for (label, k, n), (lo, hi) in zip(RESULTS, intervals):
        print(f"{label.replace(chr(10), ' ')}: {100 * k / n:.1f}% [{100 * lo:.1f}%, {100 * hi:.1f}%] ({k}/{n})")


if __name__ == "__main__":
    main()
