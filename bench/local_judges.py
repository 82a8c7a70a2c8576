"""Agreement with the human labels of the embedded judge, in every form it can take.

The embedded judge × each built-in rubric × pairwise (both orders) / pointwise × with and
without --cot, each an ordinary `rlaif label` run over the same human-labeled HH pairs,
then `rlaif agreement`'s report. Prints one markdown row per form: agreement [95% CI],
kappa, consistency across orders, first-position rate and judging seconds per pair.

A finished form is not run again: its row is kept in `<output>/<form>/bench.json`, with the
seconds measured when it ran (a rerun from the answer cache would time nothing).

Usage: python bench/local_judges.py [--data examples/hh-harmless.jsonl.gz] [--rows 600:800] [--cot-rows 600:650]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlaif.labeling.quality import label_run_report
from rlaif.labeling.run import LabelConfig, label
from rlaif.storage.files import write_json_atomic

RUBRICS = ("quality", "harmlessness", "summarization")


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def run_form(data: str, rows: str, out: Path, rubric: str, mode: str, cot: bool) -> dict:
    """One labeling run and its report (read back if it already ran)."""
    result_path = out / "bench.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    result = label(LabelConfig(input=f"{data}?rows={rows}", output=str(out), rubric=rubric, mode=mode, cot=cot))
    report = label_run_report(out)
    report["seconds_per_pair"] = result.manifest["timings"]["judging_s"] / max(1, result.manifest["counts"]["pairs"])
    report["calls"] = result.manifest["judge_calls"]["total"]
    write_json_atomic(result_path, report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="examples/hh-harmless.jsonl.gz")
    parser.add_argument("--rows", default="600:800", help="rows START:END of --data judged without --cot")
    parser.add_argument("--cot-rows", default="600:650", help="rows judged with --cot (generation is slow on a CPU)")
    parser.add_argument("--output", default="outputs/bench-judges")
    parser.add_argument("--rubrics", default=",".join(RUBRICS))
    args = parser.parse_args()

    lines = [("| judge | rubric | mode | --cot | pairs | agreement [95% CI] | kappa "
              "| consistent across orders | first-position rate | s / pair |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cot in (False, True):
        for rubric in args.rubrics.split(","):
            for mode in ("pairwise", "pointwise"):
                form = f"{rubric}-{mode}" + ("-cot" if cot else "")
                r = run_form(args.data, args.cot_rows if cot else args.rows, Path(args.output) / form, rubric, mode, cot)
                lines.append(f"| embedded | {rubric} | {mode} | {'yes' if cot else 'no'} | {r['with_human_label']} | "
                             f"{pct(r['agreement'])} [{pct(r['agreement_low'])}, {pct(r['agreement_high'])}] | {r['cohen_kappa']:.3f} | "
                             f"{pct(r['consistency_rate'])} | {pct(r['first_position_rate_raw'])} | {r['seconds_per_pair']:.2f} |")
                print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
