"""`TrainConfig`: every setting of `rlaif train`, from the command line or a TOML/YAML file."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError
from rlaif.judging.ranking import STRATEGIES
from rlaif.settings import check_settings, read_settings_file, required, setting
from rlaif.trainers.methods import METHODS, NAMES, ONLINE, method_default


@dataclass
class TrainConfig:
    """Every setting of `rlaif train`; the command's options are generated from these fields."""

    method: str = required("What to train (the table in docs/training.md says which labels each fits).", NAMES)
    data: str = required("Training data: anything `rlaif label` reads (files, hf:OWNER/NAME?data_dir=DIR&split=SPLIT) "
                         "or writes.", flag="--input", aliases=("--data",))
    output: str | None = setting(None, "Output directory [default: outputs/<method>].")
    model: str | None = setting(None, "Model name or directory [default: the embedded SmolLM2-135M-Instruct].")
    # the loop
    max_steps: int | None = setting(None, "Optimizer steps (wins over --epochs).", at_least=1)
    epochs: int = setting(1, "Passes over the training data.", at_least=1)
    batch_size: int = setting(4, "Per process (rollout prompts for PPO: --rollout-batch-size).", at_least=1)
    grad_accum: int = setting(1, "Micro-batches per optimizer step.", at_least=1)
    lr: float = setting(1e-5, "Learning rate (0: the model is left as it is).", at_least=0)
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay.", at_least=0)
    warmup_steps: int = setting(0, "Linear warm-up of the learning rate.", at_least=0)
    lr_scheduler: str = setting("linear", "After warm-up: linear decay to 0 at the last step, or constant.", ("linear", "constant"))
    max_grad_norm: float = setting(1.0, "Gradients are clipped to this norm.", above=0)
    max_length: int = setting(512, "Longest sequence (prompt + response) in tokens.", at_least=2)
    truncate_prompt: bool = setting(True, "A prompt too long for --max-length keeps its end; "
                                    "--no-truncate-prompt stops with an error instead.")
    limit: int | None = setting(None, "Read at most this many rows of --input.", at_least=1)
    seed: int = setting(0, "Seeds the data order, the split and sampling.")
    eval_data: str | None = setting(None, "Held-out data.")
    eval_split: float = setting(0.0, "Hold out this share of --input (without --eval-data).", at_least=0, below=1)
    eval_fold: int = setting(0, "Which --eval-split slice to hold out (0, 1, ...: cross-validation folds).", at_least=0)
    eval_steps: int = setting(0, "Also evaluate on the held-out data every N steps (0: at the end only).", at_least=0)
    save_steps: int = setting(0, "Checkpoint every N steps (0: at the end only).", at_least=0)
    resume: bool = setting(False, "Continue from the last checkpoint in --output.")
    bf16: bool = setting(False, "bfloat16 autocast (the reference's log-probabilities too).")
    gradient_checkpointing: bool = setting(False, "Recompute activations in the backward pass: less memory, more time.")
    train_layers: int | None = setting(None, "Train only the top N transformer blocks and the head (0: the head alone; "
                                       "rm: the frozen blocks run once per pair, not once per epoch).", at_least=0)
    lora_r: int | None = setting(None, "Train LoRA adapters of this rank (peft) instead of the whole model; the output is the adapter "
                                 "(dpo and ppo: the base with the adapter off is the reference).", at_least=1)
    lora_alpha: float = setting(16.0, "LoRA's α: the adapter's update is scaled by α / r.", above=0)
    lora_target: str = setting("all-linear", "Modules that get adapters: all-linear, or names separated by commas (q_proj,v_proj).")
    fsdp: bool = setting(False, "Under torchrun: shard weights, gradients and optimizer state over the processes "
                         "(PyTorch's fully_shard) instead of copying the model to each (DDP); sft, rm, dpo.")
    log_steps: int = setting(1, "Write metrics every N steps.", at_least=1)
    progress: bool = True  # the CLI's --quiet turns it off
    # preference objectives
    hard_labels: bool = setting(False, "Ignore ai_preference, use hard labels.", methods=("rm", "dpo", "simpo"))
    weights: str = setting("column", "How much each example counts in the loss: column, each row's `weight` (1 where it has none); "
                           "confidence, |2p − 1| of its preference p (0 for a coin flip, 1 for a sure label); none, all alike.",
                           ("column", "confidence", "none"), methods=("rm", "dpo", "simpo", "orpo", "kto"))
    beta: float | None = setting(None, "β: the KL strength of dpo and kto, the reward scale of simpo; "
                                 "orpo: λ, the weight of the odds-ratio term [default: 0.1; simpo 2.0].",
                                 above=0, methods=("dpo", "simpo", "orpo", "kto"))
    label_smoothing: float = setting(0.0, "ε, the rate at which labels are taken to be flipped (conservative DPO).", at_least=0, below=0.5,
                                     methods=("dpo", "simpo"))
    loss: str = setting("sigmoid", "sigmoid (DPO), or ipo on length-normalised log-probabilities (as TRL's ipo).",
                        ("sigmoid", "ipo"), methods=("dpo",))
    reference_cache: str | None = setting(None, "An SQLite file that keeps the reference's log-probability "
                                          "of each sequence, so that later runs from the same model on the same "
                                          "sequences (other β or lr, the pairs swapped) skip their reference pass.",
                                          methods=("dpo",))
    target_margin: float = setting(1.0, "γ, the reward margin the chosen response should clear.", at_least=0, methods=("simpo",))
    desirable_weight: float = setting(1.0, "λ_D, the weight of desirable rows' losses.", above=0, methods=("kto",))
    undesirable_weight: float = setting(1.0, "λ_U, the weight of undesirable rows' losses.", above=0, methods=("kto",))
    desirable_threshold: float | None = setting(None, "A response scored at least this (a `score` column, or a pointwise judge's scores in "
                                                "pairs.jsonl) is desirable, one below it undesirable; without it a pair's chosen response "
                                                "is desirable and its rejected one undesirable.", methods=("kto",))
    # ppo and grpo
    reward_model: str | None = setting(None, "A reward model directory (trained with --method rm), "
                                       "or a reward_model judge config.", methods=ONLINE)
    reward_function: str | None = setting(None, "A Python function FILE.py:NAME (or module:NAME) taking "
                                          "(prompts, responses) and returning one score per response.", methods=ONLINE)
    reward_judge: str | None = setting(None, "A judge config (built-in name or file); each response's reward "
                                       "is the share of its group it beats, by the judge's preferences in both orders.",
                                       methods=("grpo",))
    reward_ranking: str = setting("all-pairs", "With --reward-judge: how a group's responses are ranked: "
                                  "every pair in both orders, or adaptive, tournament or pointwise "
                                  "as `rlaif label --ranking` (fewer calls).", STRATEGIES, methods=("grpo",))
    rubric: str | None = setting(None, "With --reward-judge: the rubric (built-in name or template path) "
                                 "[default: the judge config's `rubric`, else quality].", methods=("grpo",))
    group_size: int = setting(4, "Responses sampled per prompt (G); advantages are relative to the group.", at_least=2, methods=("grpo",),
                              flag="--num-responses", aliases=("--group-size",))
    rollout_batch_size: int = setting(8, "Prompts per rollout (per process).", at_least=1, methods=ONLINE)
    ppo_epochs: int = setting(4, "Passes over each rollout.", at_least=1, methods=ONLINE)
    mini_batch_size: int = setting(4, "Sequences per update.", at_least=1, methods=ONLINE)
    max_new_tokens: int = setting(48, "Response length.", at_least=1, methods=ONLINE)
    temperature: float = setting(1.0, "Sampling temperature of rollouts (1.0, not the other commands' 0.8: "
                                 "the policy-gradient ratios assume samples from the policy itself).", above=0, methods=ONLINE)
    kl_coef: float = setting(0.05, "ppo: per-token KL penalty β in the reward; grpo: β of the KL term in the loss (0: no reference model).",
                             at_least=0, methods=ONLINE)
    gamma: float = setting(1.0, "Discount γ of GAE.", at_least=0, at_most=1, methods=("ppo",))
    lam: float = setting(0.95, "λ of GAE.", at_least=0, at_most=1, methods=("ppo",))
    cliprange: float = setting(0.2, "ε of the clipped policy loss.", above=0, methods=ONLINE)
    cliprange_value: float = setting(0.2, "ε of the clipped value loss.", above=0, methods=("ppo",))
    vf_coef: float = setting(0.1, "Weight of the value loss.", at_least=0, methods=("ppo",))
    target_kl: float | None = setting(None, "Stop a rollout's updates once the approximate KL to the rollout policy "
                                      "passes this.", at_least=0, methods=ONLINE)
    missing_eos_penalty: float | None = setting(None, "Subtracted from the score of a response with no end-of-sequence.", methods=ONLINE)
    ptx_coef: float = setting(0.0, "γ of PPO-ptx, the weight of a language-modelling loss on --ptx-data mixed into "
                              "every update (InstructGPT).", at_least=0, methods=ONLINE)
    ptx_data: str | None = setting(None, "With --ptx-coef: pretraining-style text, a .txt file (one document per line) "
                                   "or rows with a `text` field (JSONL, CSV, Parquet).", methods=ONLINE)

    def __post_init__(self) -> None:
        check_settings(self)
        for f in fields(self):
            methods = f.metadata.get("methods")
            if methods and self.method not in methods and getattr(self, f.name) != f.default:
                raise ConfigError(f"applies to --method {' or '.join(methods)}, not {self.method}", key=f.name)
        if self.output is None:
            self.output = f"outputs/{self.method}"
        if self.beta is None and "beta" in METHODS[self.method].defaults:
            self.beta = method_default(self.method, "beta")
        if self.lora_r is not None and self.train_layers is not None:
            raise ConfigError("an adapter trains beside frozen weights: give --lora-r without --train-layers", key="lora_r")
        if self.fsdp and (self.method in ONLINE or self.lora_r is not None):
            raise ConfigError("--fsdp trains sft, rm and dpo without --lora-r (ppo, grpo and LoRA run under DDP)", key="fsdp")
        if self.reward_ranking != "all-pairs" and self.reward_judge is None:
            raise ConfigError("--reward-ranking ranks each group by --reward-judge: give a judge", key="reward_ranking")
        if self.method in ONLINE and sum(x is not None for x in (self.reward_model, self.reward_function, self.reward_judge)) > 1:
            raise ConfigError("give one source of rewards: --reward-model, --reward-function or --reward-judge", key="reward_model")
        if self.ptx_coef and not self.ptx_data:
            raise ConfigError("--ptx-coef mixes --ptx-data into the updates: give both", key="ptx_coef")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """`rlaif train` settings from a TOML or YAML file."""
    return read_settings_file(path, TrainConfig)


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The settings a `rlaif train` run was made with (its `train_config.json`, less the
    counts written beside them)."""
    data = json.loads((Path(run_dir) / "train_config.json").read_text())
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in data.items() if k in names})
