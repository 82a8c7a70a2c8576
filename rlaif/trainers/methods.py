"""The training methods, one entry each: where its trainer lives, what data it trains on, and its
defaults that differ by method. `rlaif train --method`, its help, the settings check (a setting
tagged for other methods is an error) and the table in docs/training.md all read this table;
adding a method is a module with its trainer and one entry here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    trainer: str  # "module:Class", imported only when the method runs
    objective: str
    labels: str  # which labels it fits
    online: bool = False  # samples from the policy as it trains (its --input is prompts)
    reference: str = "no"  # whether it reads a reference model's log-probabilities
    defaults: dict[str, float] = field(default_factory=dict)  # settings whose default is the method's own


REGISTRY = (
    Method("sft", "rlaif.trainers.sft:SFTTrainer", "cross-entropy on the preferred response", "pairs (the chosen response)"),
    Method("rm", "rlaif.trainers.reward:RewardTrainer", "Bradley–Terry reward model", "pairs: hard, soft, weighted"),
    Method("dpo", "rlaif.trainers.dpo:DPOTrainer", "DPO (sigmoid, IPO, conservative)", "pairs: hard, soft, weighted", reference="yes",
           defaults={"beta": 0.1}),
    Method("simpo", "rlaif.trainers.simpo:SimPOTrainer", "SimPO: length-normalised, with a target margin, no reference",
           "pairs: hard, soft, weighted", defaults={"beta": 2.0}),
    Method("orpo", "rlaif.trainers.orpo:ORPOTrainer", "ORPO: SFT plus an odds-ratio term, no reference", "pairs: hard, weighted",
           defaults={"beta": 0.1}),
    Method("kto", "rlaif.trainers.kto:KTOTrainer", "KTO: unpaired desirable and undesirable rows",
           "unpaired rows (label or score), or pairs split in two; weighted", reference="yes", defaults={"beta": 0.1}),
    Method("ppo", "rlaif.trainers.ppo:PPOTrainer", "PPO against a reward model, function or judge", "prompts",
           online=True, reference="yes"),
    Method("grpo", "rlaif.trainers.grpo:GRPOTrainer", "GRPO: group-relative advantages", "prompts", online=True,
           reference="yes, none at --kl-coef 0"),
)
METHODS = {m.name: m for m in REGISTRY}
NAMES = tuple(METHODS)
ONLINE = tuple(m.name for m in REGISTRY if m.online)
PAIRED = tuple(m.name for m in REGISTRY if not m.online and m.name != "kto")  # read preference pairs as pairs


def trainer_class(name: str) -> type:
    """The trainer class of method `name` (its module imported now)."""
    module, cls = METHODS[name].trainer.split(":")
    return getattr(importlib.import_module(module), cls)


def method_default(name: str, setting: str) -> float:
    """A setting's default for one method (`defaults`), for a setting whose default differs by method."""
    return METHODS[name].defaults[setting]


def methods_table() -> str:
    """The methods as the Markdown table of docs/training.md."""
    rows = ["| `--method` | objective | labels it trains on | reference model |", "|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.objective} | {m.labels} | {m.reference} |" for m in REGISTRY]
    return "\n".join(rows)
