"""`rlaif experiment CONFIG.toml`: the AI-feedback vs human-feedback experiment end to end.

From one file of human-labeled pairs it takes three disjoint slices of rows, then:
label the training slice with the judge -> agreement with the humans -> DPO on the AI labels
and DPO on the human labels of exactly those pairs (same model, pairs, steps and seed; the
first's reference pass serves both) -> a gold reward model from the human labels of a slice
neither policy saw -> `rlaif compare` of both policies and their base on the evaluation slice.
Each step is the toolkit's own API (`label`, `agreement`, `train`, `compare`), and each is
skipped on a rerun when its output is already complete, so a killed experiment continues
where it stopped.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, get_type_hints

from rlaif.errors import ConfigError, InputError
from rlaif.evaluate.agreement import agreement
from rlaif.evaluate.compare import CompareConfig, compare
from rlaif.inputs import read_records
from rlaif.labeling.run import LabelConfig, label
from rlaif.settings import read_text, type_problem, unknown_key
from rlaif.storage.files import write_jsonl_atomic
from rlaif.storage.locks import writes_into
from rlaif.trainers.config import TrainConfig, read_run_config

SLICES = ("train", "gold", "eval")
SECTIONS = {"label": LabelConfig, "train": TrainConfig, "gold_rm": TrainConfig, "compare": CompareConfig}
SET_BY_THE_EXPERIMENT = {"input", "output", "data", "method", "model", "runs",
                         "eval_data", "gold_rm", "labels", "progress", "reference_cache"}


def read_experiment(path: str | Path) -> dict[str, Any]:
    """The experiment's settings; an unknown section or key is an error naming file and key."""
    path = Path(path)
    try:
        spec = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(e), str(path)) from None
    known = {"output", "model", "seed", "data", *SECTIONS}
    for key in spec:
        if key not in known:
            raise ConfigError(f"{unknown_key(key, sorted(known))} (expected {', '.join(sorted(known))})", str(path), key=key)
    for section in (*SECTIONS, "data"):
        if not isinstance(spec.get(section, {}), dict):
            raise ConfigError(f"expected a table ([{section}]), got {spec[section]!r}", str(path), key=section)
    for key, kind in (("output", str), ("model", str), ("seed", int)):
        if key in spec and (not isinstance(spec[key], kind) or isinstance(spec[key], bool)):
            raise ConfigError(f"expected {kind.__name__}, got {spec[key]!r}", str(path), key=key)
    for section, cls in SECTIONS.items():
        allowed = {f.name for f in fields(cls)} - SET_BY_THE_EXPERIMENT - {"seed"}
        hints = get_type_hints(cls)
        for key, value in spec.get(section, {}).items():
            if key not in allowed:
                near = unknown_key(key, sorted(allowed)).removeprefix("unknown key")
                raise ConfigError(f"not a setting of this step (or one the experiment sets itself){near} "
                                  f"(expected one of {', '.join(sorted(allowed))})", str(path), key=f"{section}.{key}")
            if (problem := type_problem(value, hints[key])) is not None:
                raise ConfigError(problem, str(path), key=f"{section}.{key}")
    data = spec.get("data", {})
    for name in ("source", *SLICES):
        if name not in data:
            raise ConfigError("missing", str(path), key=f"data.{name}")
    if not isinstance(data["source"], str):
        raise ConfigError(f"expected an input (a path or hf:...), got {data['source']!r}", str(path), key="data.source")
    for name in SLICES:
        value = data[name]
        if not (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value) and value[0] < value[1]):
            raise ConfigError(f"expected [START, END], two row numbers with START < END, got {value!r}", str(path), key=f"data.{name}")
    ranges = {name: range(*data[name]) for name in SLICES}
    for i, a in enumerate(SLICES):
        for b in SLICES[i + 1:]:
            if set(ranges[a]) & set(ranges[b]):
                raise ConfigError(f"rows {a} {data[a]} and {b} {data[b]} overlap: the slices must be disjoint", str(path), key="data")
    return {**spec, "ranges": ranges}


def slice_inputs(source: str, ranges: dict[str, range]) -> dict[str, str]:
    """Each slice as an input spec, ``SOURCE?rows=START:END``; a slice past the file's end is an error."""
    total = sum(1 for _ in read_records(source))
    for name, rows in ranges.items():
        if rows.stop > total:
            raise InputError(source, None, None, f"the {name} slice asks for rows up to {rows.stop}, but the file has {total}")
    return {name: f"{source}?rows={rows.start}:{rows.stop}" for name, rows in ranges.items()}


def human_labeled_twins(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The AI-labeled pairs with the human's choice as `chosen`: the same pairs, in the same
    order, so the two policies differ only in who chose (the judge may have skipped a pair)."""
    twins = []
    for r in rows:
        if r.get("human_preference") is None:
            raise InputError(r["id"], None, "human_preference", "the experiment's training rows must carry human labels")
        human_agrees = r["human_preference"] > 0.5
        chosen, rejected = (r["chosen"], r["rejected"]) if human_agrees else (r["rejected"], r["chosen"])
        twins.append({"id": r["id"], "prompt": r["prompt"], "chosen": chosen, "rejected": rejected})
    return twins


def _settings(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k != "progress"}


def train_once(config: TrainConfig) -> None:
    """Train, unless the output already holds a finished run of exactly these settings."""
    out = Path(config.output)
    if (out / "eval_results.json").exists() and _settings(read_run_config(out)) == _settings(config):
        print(f"{out}: already trained with these settings")
        return
    from rlaif.trainers import train

    train(config)


def experiment_output(path: str | Path, progress: bool = True) -> Path:
    """The directory an experiment file writes into."""
    return Path(read_experiment(path).get("output", "outputs/experiment"))


@writes_into(experiment_output)
def run_experiment(path: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run every step; returns the comparison's metrics (also in `<output>/metrics.json`)."""
    spec = read_experiment(path)
    out = experiment_output(path)
    model, seed = spec.get("model"), spec.get("seed", 0)
    data = slice_inputs(spec["data"]["source"], spec["ranges"])

    label_dir = out / "labels"
    labeled = label(LabelConfig(input=data["train"], output=str(label_dir), seed=seed, progress=progress, **spec.get("label", {})))
    agreement(label_dir)
    human = out / "train-human-labels.jsonl"
    write_jsonl_atomic(human, human_labeled_twins(labeled.rows))

    # the two runs read the same sequences (some pairs swapped): one reference pass serves both
    common = {"method": "dpo", "model": model, "seed": seed, "progress": progress,
              "reference_cache": str(out / "cache.sqlite"), **spec.get("train", {})}
    runs = [str(out / "dpo-ai-labels"), str(out / "dpo-human-labels")]
    train_once(TrainConfig(data=str(label_dir / "pairs.jsonl"), output=runs[0], **common))
    train_once(TrainConfig(data=str(human), output=runs[1], **common))
    gold_dir = str(out / "gold-rm")
    train_once(TrainConfig(method="rm", data=data["gold"], output=gold_dir, model=model, seed=seed, progress=progress,
                           **spec.get("gold_rm", {})))

    judge = spec.get("label", {}).get("judge")
    options = {**({"judge": judge} if judge else {}), **spec.get("compare", {})}
    return compare(CompareConfig(runs=runs, eval_data=data["eval"], output=str(out), gold_rm=gold_dir, labels=[str(label_dir)],
                                 seed=seed, progress=progress, **options))
