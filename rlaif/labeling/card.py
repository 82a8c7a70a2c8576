"""The data set card a labeling run writes beside `pairs.jsonl` (`README.md`): front matter
that the Hugging Face hub and `datasets.load_dataset(DIR)` read, then how the labels were made
and how far they can be trusted, in prose and tables. It is built from the manifest (which
holds names of key variables, never keys) and the labeled rows."""

from __future__ import annotations

import shlex
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml

from rlaif.settings import option_flag
from rlaif.storage.files import write_text_atomic

FRONT_MATTER = {
    "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "pairs.jsonl"}]}],
    "tags": ["dpo", "preference", "rlaif", "ai-feedback"],
}


def command_of(config: Any) -> str:
    """The `rlaif label` command that makes a run with these settings (those left at their default unsaid)."""
    words = ["rlaif", "label"]
    for f in fields(config):
        if "help" not in f.metadata:
            continue
        value = getattr(config, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        flag = option_flag(f)
        words += [flag] if value is True else [] if value is False else [flag, str(value)]
    return shlex.join(words)


def _items(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _number(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def card(manifest: dict[str, Any], report: dict[str, Any], command: str) -> str:
    """The card's text: front matter, then the judge, the rubric, counts, biases and, where the
    rows carry human labels, agreement with them beside trivial rules."""
    m, c = manifest, manifest["counts"]
    judge, rubric = m["judge"], m["rubric"]
    rubric_cell = "none (the judge reads no rubric)" if rubric is None else f"`{rubric['name']}`, sha256 `{rubric['sha256'][:16]}`"
    mode_cell = {"pointwise": "pointwise: each response scored alone",
                 "jury": f"a jury of {len(judge['options'].get('members', []))} judges, "
                         f"combined by {judge['options'].get('combine')} (pairwise members' orders: {m['config']['debias']})",
                 }.get(m["mode"], f"pairwise, orders: {m['config']['debias']}")
    about = ("Each row of `pairs.jsonl` is a prompt with a `chosen` and a `rejected` response, as chosen by the "
             f"{judge['name']} judge, with `ai_preference`, the judge's probability that `chosen` is the better one, "
             "and the evidence behind it (the judge's answers in each order, or its score of each response). "
             "It loads with `datasets.load_dataset(\"<this folder>\")`, and trains with TRL's `DPOTrainer` or "
             "`rlaif train` as it is.")
    lines = ["---", yaml.safe_dump(FRONT_MATTER, sort_keys=False).strip(), "---", "",
             f"# AI-labeled preference pairs ({c['labeled']} pairs)", "",
             about, "",
             "## How it was made", "", "```bash", command, "```", "",
             "| | |", "|---|---|",
             f"| judge | `{judge['name']}`: backend `{judge['backend']}`, model `{judge['model']}` |",
             f"| judge options | {_items(judge['options']) or 'none'} |",
             f"| rubric | {rubric_cell} |",
             f"| mode | {mode_cell} |",
             f"| rlaif | {m['rlaif_version']}, {m['created']} |", "",
             "## Counts", "", "| | |", "|---|---|",
             f"| input rows | {c['examples']} |", f"| pairs | {c['pairs']} |", f"| labeled | {c['labeled']} |",
             f"| consistent / inconsistent across orders | {c['consistent']} / {c['inconsistent']} |",
             f"| skipped | {_items(c['skipped'])} |", f"| failed | {_items(c['failed'])} |", f"| filtered out | {_items(c['filtered'])} |",
             f"| judge answers: soft / unreadable | {_pct(m['verdicts']['soft_share'])} / {_pct(m['verdicts']['unreadable_share'])} |", "",
             "## Biases", "", "| | |", "|---|---|",
             f"| judge preferred what it saw first (raw answers) | {_pct(m['first_position_rate']['raw'])} |",
             f"| final label is the response shown first | {_pct(m['first_position_rate']['labels'])} |",
             f"| chosen is the longer response | {_pct(report['length_bias_ai'])} |", ""]
    if r := m.get("ranking"):
        lines += ["## Ranked candidates", "",
                  (f"{r['rows']} rows had more than two candidates. The judge ranked each row's candidates ({r['strategy']}, "
                   f"{r['calls_per_row']:.1f} calls a row), and the row gave its `{r['pairs']}` pairs, "
                   f"each one the judge compared directly in orders that agree; {r['unseparated']} pairs it could not "
                   f"separate were left out. Intransitive triples among the comparisons: {r['intransitive_triples']}. "
                   "Each row's ranking (every candidate's score, its standard error and its rank) "
                   "is in `rankings.jsonl`."), ""]
    if report["with_human_label"]:
        lift = report["lift_over_best_baseline"]
        lines += ["## Agreement with human labels", "",
                  (f"{report['with_human_label']} rows carry a human label. How often the AI label agrees with it, "
                   "beside rules that need no judge:"), "",
                  "| labeler | agreement with humans |", "|---|---|",
                  (f"| the {judge['name']} judge | {_pct(report['agreement'])} "
                   f"[95% CI {_pct(report['agreement_low'])}, {_pct(report['agreement_high'])}] |"),
                  *[f"| {name} | {_pct(b['agreement'])} |" for name, b in report["baselines"].items()], ""]
        if lift:
            lines += [(f"The judge's lift over the best of these rules ({lift['baseline']}) is {100 * lift['difference']:+.1f} points, "
                       f"95% CI [{100 * lift['low']:+.1f}, {100 * lift['high']:+.1f}] (paired, on the same pairs). "
                       f"Expected calibration error of `ai_preference`: {report['calibration']['ece']:.3f}."), ""]
    else:
        lines += ["## Agreement with human labels", "",
                  "No row carries a human label, so how often these labels are right is not measured here.", ""]
    if jury := report.get("jury"):
        kappa = _number(jury["fleiss_kappa"])
        lines += ["## Jury members", "", "| member | mode | weight | agreement with humans | ECE |", "|---|---|---|---|---|",
                  *[f"| `{j['judge']}` | {j['mode']} | {j['weight']:g} | {_pct(j['agreement'])} | {_number(j['ece'])} |"
                    for j in jury["members"]], "",
                  (f"The members' agreement with one another: Fleiss' kappa {kappa}, unanimous on {_pct(jury['unanimous'])} of the "
                   f"{jury['pairs_with_every_vote']} pairs where each of them picked a side."), ""]
    return "\n".join(lines)


def write_card(out: Path, manifest: dict[str, Any], report: dict[str, Any], command: str) -> None:
    write_text_atomic(out / "README.md", card(manifest, report, command))
