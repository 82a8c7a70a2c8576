"""`rlaif iterate`: online RLAIF, a policy learning from its own outputs, round after round.

Each round r has its own directory `round-r/`:
1. `labels/`: the current policy samples K responses to every prompt, and the judge labels
   them (`rlaif label` with the policy as generator: with K > 2, its best against its worst);
2. `model/`: DPO on those pairs from the current policy, which is also DPO's reference; or,
   with method ppo, `rm/`: the reward model updated on the round's pairs (from the last
   round's), then `model/`: PPO against it.
The round's model is the next round's policy. Each step is the toolkit's own (`label`,
`train`); a finished step is skipped on a rerun and training resumes from its last
checkpoint, so a killed loop continues at the round and step where it stopped. At the end,
`rlaif compare` judges every round's policy against the starting one on held-out prompts, and
`rounds.md` sums the rounds up in one table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError
from rlaif.evaluate.compare import BASE, CompareConfig, Policy, compare, describe_run
from rlaif.evaluate.report import policy_table
from rlaif.inputs import load_examples
from rlaif.judging.configs import DEFAULT_JUDGE
from rlaif.judging.generation import SAMPLING_TEMPERATURE
from rlaif.labeling.run import LabelConfig, label
from rlaif.models.loading import EMBEDDED_NAMES, is_embedded
from rlaif.settings import check_settings, required, setting
from rlaif.storage.files import write_jsonl_atomic
from rlaif.storage.locks import writes_into
from rlaif.trainers.config import TrainConfig
from rlaif.workflows.experiment import train_once

ROUND_METHODS = ("dpo", "ppo")  # what trains each round: DPO on its pairs, or a reward model on them and PPO against it
SET_BY_THE_LOOP = {"method", "data", "model", "output", "reward_model", "resume", "progress"}
DEFAULT_SAVE_STEPS = 10  # a killed round resumes from its last checkpoint


@dataclass
class IterateConfig:
    """Everything the loop depends on; the options of `rlaif iterate` are generated from these fields."""

    prompts: str = required("Prompts (any input `rlaif label` reads; only the prompts are used).", flag="--input", aliases=("--prompts",))
    eval_data: str = required("Held-out prompts on which every round's policy is compared with the start.")
    output: str = setting("outputs/iterate", "Output directory: round-N/ per round, rounds.md, and the comparison's report.md.")
    rounds: int = setting(2, "Rounds of sample -> label -> train.", at_least=1)
    model: str | None = setting(None, "The starting policy [default: the embedded model].")
    method: str = setting("dpo", "dpo (on each round's pairs) or ppo (a reward model updated on them, and ppo against it).", ROUND_METHODS)
    judge: str = setting(DEFAULT_JUDGE, "Judge of each round's samples, and of the final comparison.")
    rubric: str | None = setting(None, "Built-in rubric name or path to a Jinja2 template "
                                 "[default: the judge config's `rubric`, else quality].")
    num_responses: int = setting(2, "Samples per prompt and round (K); with more than two, "
                                 "the judge's best against its worst is the round's pair.", at_least=2)
    max_new_tokens: int = setting(64, "Length of the samples.", at_least=1)
    temperature: float = setting(SAMPLING_TEMPERATURE, "Sampling temperature of the samples.", at_least=0)
    limit: int | None = setting(None, "Use at most this many prompts.", at_least=1)
    eval_limit: int | None = setting(None, "Use at most this many evaluation prompts.", at_least=1)
    gold_rm: str | None = setting(None, "A gold reward model: its mean score of each round's policy.")
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig settings of each round's policy training (the CLI's --train-config)
    rm_train: dict[str, Any] = field(default_factory=dict)  # ... and of each round's reward model, method ppo (--rm-config)
    seed: int = setting(0, "Seeds sampling, labeling and training.")
    progress: bool = True  # the CLI's --quiet turns it off

    def __post_init__(self) -> None:
        check_settings(self)
        for section in ("train", "rm_train"):
            for key in getattr(self, section):
                if key in SET_BY_THE_LOOP:
                    raise ConfigError(f"set by the loop itself (one of {', '.join(sorted(SET_BY_THE_LOOP))})", key=f"{section}.{key}")


def _train_settings(cfg: IterateConfig, settings: dict[str, Any]) -> dict[str, Any]:
    return {"seed": cfg.seed, "save_steps": DEFAULT_SAVE_STEPS, **settings, "resume": True, "progress": cfg.progress}


def run_round(cfg: IterateConfig, r: int, prompts: Path, policy: str | None, rm: str | None) -> tuple[str, str | None]:
    """Round `r` from `policy` (and, for ppo, the last round's reward model `rm`): label its
    samples, train on them. Returns the round's policy and reward model."""
    d = Path(cfg.output) / f"round-{r}"
    # A new seed each round: the same policy would otherwise draw the same samples.
    label(LabelConfig(input=str(prompts), output=str(d / "labels"), judge=cfg.judge, rubric=cfg.rubric, generator=policy,
                      num_responses=cfg.num_responses, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                      seed=cfg.seed + r, progress=cfg.progress))
    pairs = str(d / "labels" / "pairs.jsonl")
    if cfg.method == "dpo":
        train_once(TrainConfig(method="dpo", data=pairs, model=policy, output=str(d / "model"), **_train_settings(cfg, cfg.train)))
        return str(d / "model"), None
    rm_settings = {"train_layers": 0, **cfg.rm_train}  # by default the head alone, on the policy's frozen backbone
    train_once(TrainConfig(method="rm", data=pairs, model=rm, output=str(d / "rm"), **_train_settings(cfg, rm_settings)))
    train_once(TrainConfig(method="ppo", data=str(prompts), model=policy, reward_model=str(d / "rm"), output=str(d / "model"),
                           **_train_settings(cfg, cfg.train)))
    return str(d / "model"), str(d / "rm")


@writes_into(lambda cfg: cfg.output)
def iterate(cfg: IterateConfig) -> dict[str, Any]:
    """Run every round not yet done, then compare every round's policy with the start.
    Returns the comparison's metrics (also in `<output>/metrics.json`)."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.jsonl"
    write_jsonl_atomic(prompts, [{"id": ex.id, "prompt": ex.prompt} for ex in load_examples(cfg.prompts, cfg.limit).examples])
    policy, rm = cfg.model, cfg.model
    policies = [Policy(BASE, cfg.model, f"nothing: the starting policy ({EMBEDDED_NAMES[0] if is_embedded(cfg.model) else cfg.model})")]
    for r in range(1, cfg.rounds + 1):
        policy, rm = run_round(cfg, r, prompts, policy, rm)
        run = describe_run(policy)
        policies.append(replace(run, name=f"round-{r}", trained_on=f"{run.trained_on}, on round {r}'s own samples"))
    metrics = compare(CompareConfig(runs=[p.run for p in policies[1:]], eval_data=cfg.eval_data, output=str(out),
                                    judge=cfg.judge, rubric=cfg.rubric, gold_rm=cfg.gold_rm, limit=cfg.eval_limit,
                                    max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, progress=cfg.progress), policies)
    (out / "rounds.md").write_text(rounds_table(cfg, metrics) + "\n")
    return metrics


def rounds_table(cfg: IterateConfig, metrics: dict[str, Any]) -> str:
    """One row per round: what it labeled and trained, and how its policy compares with the start."""

    @cache
    def round_of(name: str) -> dict[str, str]:
        if name == BASE:
            return {"round": "0 (start)", "labeled": "—", "consistent": "—", "loss": "—"}
        d = Path(cfg.output) / name
        manifest = json.loads((d / "labels" / "manifest.json").read_text())
        counts = manifest["counts"]
        losses = [r[key] for r in map(json.loads, (d / "model" / "metrics.jsonl").read_text().splitlines())
                  for key in ("loss", "policy_loss") if key in r]
        return {"round": name.removeprefix("round-"), "labeled": str(counts["labeled"]),
                "consistent": "— (pointwise)" if manifest["mode"] == "pointwise" else f"{counts['consistent']} of {counts['labeled']}",
                "loss": f"{losses[0]:.3f} → {losses[-1]:.3f}" if losses else "—"}

    lead = [(header, lambda row, key=key: round_of(row.name)[key]) for header, key in
            (("round", "round"), ("pairs labeled", "labeled"), ("consistent across orders", "consistent"),
             ("train loss (first → last)", "loss"))]
    return "\n".join(policy_table(metrics, lead, ("win_rate", "rating_point", "gold_reward", "kl", "length"), base="start"))