"""Juries: several judges asked about each pair, their preferences combined into one.

A jury config (`backend = "jury"`) names its members — built-in judge names or config files,
each judged in its own mode and with its own weight — and how their P(A ≻ B) combine:

- mean:      p = (1/n) Σ_i p_i
- weighted:  p = Σ_i w_i p_i / Σ_i w_i
- majority:  p = Σ_i w_i v_i / Σ_i w_i, with v_i = 1 if p_i > ½, ½ if p_i = ½, else 0
             (the weighted share of the members' votes that went to A)

Each member's requests are keyed by its own identity, exactly as if it judged alone, so the
answer cache is shared with single-judge runs and a member added later costs only its calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.judging.base import MODES, JudgeConfig, JudgeConfigError
from rlaif.judging.configs import JURY, resolve_judge_path
from rlaif.storage.resources import builtin_dir

COMBINES = ("mean", "weighted", "majority")
MEMBER_KEYS = ("judge", "mode", "weight")


@dataclass(frozen=True)
class Member:
    """One judge of a jury: a built-in name or a config file, its mode (None: the run's, else the
    judge's own) and its weight in `weighted` and `majority`."""

    judge: str
    mode: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Jury:
    members: tuple[Member, ...]
    combine: str = "mean"


def combine_preferences(p: Sequence[float], weights: Sequence[float], rule: str) -> float:
    """The panel's P(A ≻ B) from its members' p_i (see the module's formulas)."""
    if rule == "mean":
        weights = [1.0] * len(p)
    elif rule == "majority":
        p = [1.0 if q > 0.5 else 0.0 if q < 0.5 else 0.5 for q in p]
    elif rule != "weighted":
        raise ValueError(f"unknown combine rule {rule!r}")
    return sum(w * q for w, q in zip(weights, p, strict=True)) / sum(weights)


def _member_ref(ref: str, jury_file: str | None, where: str) -> str:
    """A member's judge as a manifest names it: a built-in name, or an absolute path (a relative
    path is read from the jury file's folder first)."""
    if jury_file is not None and Path(ref).suffix and (beside := Path(jury_file).parent / ref).exists():
        ref = str(beside)
    try:
        path = resolve_judge_path(ref)
    except JudgeConfigError as e:
        raise JudgeConfigError(f"{where}: {e}") from None
    return path.stem if path.parent == builtin_dir("judges") else str(path)


def parse_jury(config: JudgeConfig) -> Jury:
    """The members and combine rule of a jury config, checked (naming the file and key)."""
    where = config.source or config.name
    unknown = set(config.options) - {"members", "combine"}
    if unknown:
        raise JudgeConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} in 'options': a jury has 'members' and 'combine'")
    combine = config.options.get("combine", "mean")
    if combine not in COMBINES:
        raise JudgeConfigError(f"{where}: key 'options.combine': expected one of {', '.join(COMBINES)}, got {combine!r}")
    raw = config.options.get("members")
    if not isinstance(raw, list) or len(raw) < 2:
        raise JudgeConfigError(f"{where}: key 'options.members': expected a list of two or more judges "
                               f"(names, files or tables with {', '.join(MEMBER_KEYS)})")
    members = []
    for i, item in enumerate(raw):
        key = f"options.members[{i}]"
        item = {"judge": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("judge"), str) or set(item) - set(MEMBER_KEYS):
            raise JudgeConfigError(f"{where}: key '{key}': expected a judge name or file, "
                                   f"or a table with {', '.join(MEMBER_KEYS)}, got {item!r}")
        mode, weight = item.get("mode"), item.get("weight", 1.0)
        if mode is not None and mode not in MODES:
            raise JudgeConfigError(f"{where}: key '{key}.mode': expected one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            raise JudgeConfigError(f"{where}: key '{key}.weight': expected a number above 0, got {weight!r}")
        members.append(Member(_member_ref(item["judge"], config.source, f"{where}: key '{key}'"), mode, float(weight)))
    return Jury(tuple(members), combine)


def public_options(jury: Jury, modes: Sequence[str]) -> dict[str, Any]:
    """The jury's options as its manifest and a calibrated copy of its config hold them, with the
    mode each member judged in (so the copy forms the same panel whatever --mode it is run with)."""
    return {"combine": jury.combine,
            "members": [{"judge": m.judge, "mode": mode, "weight": m.weight} for m, mode in zip(jury.members, modes)]}


def is_jury(config: JudgeConfig) -> bool:
    return config.backend == JURY
