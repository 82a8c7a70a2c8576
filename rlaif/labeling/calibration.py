"""`rlaif calibrate`: fit a judge's temperature on human-labeled pairs, so that its
`ai_preference` is a probability one can use as one (a 0.8 right about 80% of the time).

Temperature scaling keeps every label and moves only its confidence: P' = σ(logit P / T). T is
fitted by maximum likelihood on the pairs' human labels; the calibration error before and after
is measured by K-fold cross-validation (each fold's P' from a T fitted on the other folds), so
the figure is not measured on the pairs it was fitted on. The fitted T goes into a copy of the
run's judge config, which `rlaif label --judge` then uses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from rlaif.errors import InputError
from rlaif.judging.base import MODES
from rlaif.judging.debias import calibrated
from rlaif.labeling.quality import read_run
from rlaif.stats import expected_calibration_error
from rlaif.storage.files import write_text_atomic
from rlaif.storage.resources import builtin_dir

MIN_PAIRS_PER_FOLD = 2


def log_loss(p: list[float], y: list[int]) -> float:
    """The mean negative log-likelihood of the labels y under probabilities p."""
    eps = 1e-12
    return -sum(math.log(max(q, eps)) if k else math.log(max(1 - q, eps)) for q, k in zip(p, y, strict=True)) / len(p)


def fit_temperature(p: list[float], y: list[int]) -> float:
    """The T in [0.05, 20] that minimises the log loss of σ(logit p / T) against y (p: the judge's
    P(chosen ≻ rejected), strictly between 0 and 1; y: 1 where the humans agree)."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: log_loss([calibrated(q, math.exp(log_t)) for q in p], y),
                            bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(found.x))


def fitted_under(manifest: dict[str, Any]) -> dict[str, str]:
    """The rubric and mode the run's preferences came from, as judge config keys: the temperature
    is fitted to them, so the calibrated config asks the same way when a run names neither."""
    keys = {"mode": manifest["mode"]} if manifest["mode"] in MODES else {}  # a jury's members keep their own modes
    if manifest.get("rubric"):
        name, path = manifest["rubric"]["name"], manifest["rubric"]["path"]
        keys["rubric"] = name if Path(path).parent == builtin_dir("prompts") else path
    return keys


def calibrate(run_dir: str | Path, folds: int = 5, seed: int = 0, output: str | Path | None = None) -> dict[str, Any]:
    """Fit the judge of a labeling run on its human-labeled pairs; write the calibrated judge
    config and return the report (T, calibration error and log loss before and after)."""
    from sklearn.model_selection import KFold

    run_dir = Path(run_dir)
    rows, manifest = read_run(run_dir)
    pairs_file = str(run_dir / "pairs.jsonl")
    soft = [r for r in rows if r.get("human_preference") is not None and r["ai_preference"] < 1.0]
    if len(soft) < folds * MIN_PAIRS_PER_FOLD:
        raise InputError(pairs_file, None, "human_preference",
                         f"{len(soft)} pairs with a human label and a soft ai_preference (below 1): "
                         f"calibrating with --folds {folds} needs {folds * MIN_PAIRS_PER_FOLD} or more")
    p = [r["ai_preference"] for r in soft]
    y = [int(r["human_preference"] > 0.5) for r in soft]
    held_out = [0.0] * len(p)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(p):
        t = fit_temperature([p[i] for i in train], [y[i] for i in train])
        for i in test:
            held_out[i] = calibrated(p[i], t)
    t_all = fit_temperature(p, y)
    judge = manifest["judge"]
    total = judge.get("calibration", 1.0) * t_all  # the run's preferences already carry its judge's calibration
    config = {"backend": judge["backend"], "model": judge["model"], "options": judge["options"], **fitted_under(manifest),
              "calibration": round(total, 6)}
    path = Path(output) if output else run_dir / "calibrated-judge.yaml"
    write_text_atomic(path, f"# {judge['name']}, calibrated by `rlaif calibrate {run_dir}` on {len(p)} human-labeled pairs\n"
                            + yaml.safe_dump(config, sort_keys=False))
    return {
        "judge": judge["name"], "pairs": len(p), "folds": folds, "temperature": t_all, "calibration": total, "config": str(path),
        "ece_before": expected_calibration_error(p, y)[0],
        "ece_after_cross_validated": expected_calibration_error(held_out, y)[0],  # P' stays on P's side of ½
        "log_loss_before": log_loss(p, y), "log_loss_after_cross_validated": log_loss(held_out, y),
    }


def format_calibration(report: dict[str, Any]) -> str:
    r = report
    return "\n".join([
        f"judge {r['judge']}: temperature {r['temperature']:.3f} fitted on {r['pairs']} human-labeled pairs",
        (f"expected calibration error: {r['ece_before']:.3f} before, {r['ece_after_cross_validated']:.3f} after "
         f"({r['folds']}-fold cross-validated)"),
        f"log loss: {r['log_loss_before']:.4f} before, {r['log_loss_after_cross_validated']:.4f} after ({r['folds']}-fold cross-validated)",
        (f"calibrated judge config -> {r['config']} (calibration {r['calibration']:.4f}); "
         f"label with it: rlaif label --judge {r['config']} ..."),
        *(["the fitted temperature is at its upper bound: the judge's preferences carry about no signal about the humans' choices"]
          if r["temperature"] > 19.9 else []),
    ])
