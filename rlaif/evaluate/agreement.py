"""`rlaif agreement DIR`: a labeling run's quality report (`rlaif.labeling.quality`) written as
`agreement.json`, with its reliability diagram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlaif.evaluate.plots import reliability_diagram
from rlaif.labeling.quality import label_run_report
from rlaif.storage.files import write_json_atomic


def agreement(run_dir: str | Path) -> dict[str, Any]:
    """Compute the report for a labeling run directory and write `agreement.json` into it, with
    the reliability diagram (`reliability.png`) where human labels exist."""
    report = label_run_report(run_dir)
    if report.get("calibration"):
        title = f"{report.get('judge')} judge, {report['with_human_label']} human-labeled pairs: ECE {report['calibration']['ece']:.3f}"
        report["reliability_diagram"] = reliability_diagram(Path(run_dir) / "reliability.png", report["calibration"]["bins"], title)
    write_json_atomic(Path(run_dir) / "agreement.json", report)
    return report
