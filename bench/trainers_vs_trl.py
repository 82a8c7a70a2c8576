"""rlaif's preference trainers against TRL's, side by side: DPO (DPOTrainer), the reward model
(RewardTrainer), SimPO (CPOTrainer, loss_type="simpo", cpo_alpha=0), ORPO (ORPOTrainer) and
KTO (KTOTrainer, on the pairs split into desirable and undesirable rows).

Both sides train the same model on the same pairs in the same order, with the same batch size,
sequence length, optimizer (torch AdamW), learning rate, gradient clipping and number of steps,
each as a whole process of its own, the runs alternating (rlaif, TRL, rlaif, TRL, ...). For
each run: wall time of the whole process, median time of an optimizer step after the first,
peak memory (the process's maximum resident set), and the loss logged at every step.

The pairs are the first N of the bundled HH-harmless file whose chosen and rejected sequences
fit in --max-length, so that neither side truncates. TRL gets them in its standard text form
(the chat-rendered prompt, and each response, to which it appends EOS); the script checks that
both sides then tokenize every sequence to the same ids. TRL reads the pairs in rlaif's batch
order (`train_sampling_strategy="sequential"` over a file written in that order).

    pip install -e '.[bench]'
    python bench/trainers_vs_trl.py --method dpo --runs 3
    python bench/trainers_vs_trl.py --method rm --runs 3
    python bench/trainers_vs_trl.py --method simpo --runs 3   # likewise orpo, kto
    python bench/trainers_vs_trl.py --method dpo --runs 3 --bf16 --gradient-checkpointing   # TRL's defaults

`--model DIR` trains another model (its own tokenizer); on a machine with a GPU both sides
train on it (bench/gpu.py runs this script there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from harness import ROOT, alternate  # this folder's own module (bench/ is on the path when run)

from rlaif.models.encoding import encode
from rlaif.models.loading import chat_prompt, load_tokenizer
from rlaif.trainers import TrainConfig, trainer_for
from rlaif.trainers.loop import micro_batches
from rlaif.trainers.methods import METHODS
from rlaif.trainers.pairs import load_pairs
from rlaif.trainers.reward import score_pad_token

DATA = ROOT / "examples" / "hh-harmless.jsonl.gz"


def settings(args: argparse.Namespace) -> dict:
    """What both sides are given."""
    return {"method": args.method, "batch_size": args.batch_size, "max_length": args.max_length, "lr": args.lr,
            "steps": args.steps, "beta": args.beta, "target_margin": args.target_margin, "seed": 0, "threads": args.threads,
            "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing, "model": args.model}


def write_inputs(workdir: Path, method: str, n: int, max_length: int, batch_size: int, steps: int,
                 model: str | None = None) -> tuple[Path, Path, int]:
    """rlaif's pairs file and TRL's (in rlaif's batch order), a check that both tokenize alike,
    and the tokens of the sequences the training steps see (chosen and rejected, no padding)."""
    tokenizer = load_tokenizer(model, padding_side="right")
    if method == "rm":
        tokenizer.pad_token = score_pad_token(tokenizer)
    pairs = []
    for pair in load_pairs(f"{DATA}?rows=0:2000"):
        seqs = [encode(tokenizer, pair.prompt, r, 10**6, pair.source, False)["input_ids"] for r in (pair.chosen, pair.rejected)]
        if max(map(len, seqs)) <= max_length:
            pairs.append((pair, seqs))
        if len(pairs) == n:
            break
    ours = workdir / "pairs.jsonl"
    if method == "kto":  # each pair as a desirable and an undesirable row, both sides reading these rows
        rows = [({"prompt": p.prompt, "completion": text, "label": good}, ids)
                for p, seqs in pairs for text, ids, good in zip((p.chosen, p.rejected), seqs, (True, False))]
        ours.write_text("".join(json.dumps(r) + "\n" for r, _ in rows))
    else:
        ours.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n" for p, _ in pairs))
        rows = pairs
    order = [i for batch in micro_batches(len(rows), batch_size, 1 + steps * batch_size // len(rows), 0) for i in batch]
    theirs = workdir / "trl.jsonl"
    trl_rows, tokens = [], 0
    for i in order[: steps * batch_size]:
        row, seqs = rows[i]
        seqs = [seqs] if method == "kto" else seqs
        tokens += sum(map(len, seqs))
        prompt = chat_prompt(tokenizer, row["prompt"] if method == "kto" else row.prompt)
        texts = [row["completion"]] if method == "kto" else [row.chosen, row.rejected]
        for response, ids in zip(texts, seqs):
            if tokenizer(prompt + response + tokenizer.eos_token, add_special_tokens=False)["input_ids"] != ids:
                raise SystemExit(f"row {i}: TRL would tokenize it differently from rlaif; the comparison would not be like for like")
        trl_rows.append({**row, "prompt": prompt} if method == "kto"
                        else {"prompt": prompt, "chosen": row.chosen, "rejected": row.rejected})
    theirs.write_text("".join(json.dumps(r) + "\n" for r in trl_rows))
    return ours, theirs, tokens


# ---------------------------------------------------------------- the two workers (each a process of its own)


def run_rlaif(s: dict, data: Path, out: Path) -> dict:
    own = {"beta": s["beta"]} if "beta" in METHODS[s["method"]].defaults else {}
    if s["method"] == "simpo":
        own["target_margin"] = s["target_margin"]
    config = TrainConfig(method=s["method"], model=s["model"], data=str(data), output=str(out), max_steps=s["steps"],
                         batch_size=s["batch_size"], lr=s["lr"], lr_scheduler="constant", max_length=s["max_length"],
                         seed=s["seed"], progress=False,
                         bf16=s["bf16"], gradient_checkpointing=s["gradient_checkpointing"], **own)
    stamps: list[float] = []
    trainer = trainer_for(config, on_log=lambda row: stamps.append(time.perf_counter()) if "loss" in row else None)
    trainer.train()
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    return {"losses": losses, "stamps": stamps}


def run_trl(s: dict, data: Path, out: Path) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import TrainerCallback

    from rlaif.models.loading import load_causal_lm, load_reward_model

    stamps: list[float] = []
    losses: list[float] = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    common = {"output_dir": str(out), "per_device_train_batch_size": s["batch_size"], "max_steps": s["steps"], "learning_rate": s["lr"],
                  "lr_scheduler_type": "constant", "optim": "adamw_torch", "weight_decay": 0.0, "max_grad_norm": 1.0, "logging_steps": 1,
                  "save_strategy": "no", "report_to": [], "use_cpu": not torch.cuda.is_available(),
                  "train_sampling_strategy": "sequential", "seed": s["seed"],
                  "max_length": s["max_length"], "dataloader_num_workers": 0, "disable_tqdm": True,
                  # set: TRL defaults to both on, rlaif to both off
                  "bf16": s["bf16"], "gradient_checkpointing": s["gradient_checkpointing"]}
    dataset = load_dataset("json", data_files=str(data), split="train")
    tokenizer = load_tokenizer(s["model"], padding_side="right")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(s["seed"])  # as rlaif's trainer does before building its model (the reward head's initialisation)
    if s["method"] == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=load_causal_lm(s["model"], device),
                             args=DPOConfig(beta=s["beta"], precompute_ref_log_probs=True, **common),
                             train_dataset=dataset, processing_class=tokenizer, callbacks=[Record()])
    elif s["method"] in ("simpo", "orpo", "kto"):
        os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
        if s["method"] == "simpo":
            from trl.experimental.cpo import CPOConfig as Config
            from trl.experimental.cpo import CPOTrainer as Trainer

            own = {"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": s["target_margin"]}
        elif s["method"] == "orpo":
            from trl.experimental.orpo import ORPOConfig as Config
            from trl.experimental.orpo import ORPOTrainer as Trainer

            own = {}
        else:
            from trl import KTOConfig as Config
            from trl import KTOTrainer as Trainer

            own = {"precompute_ref_log_probs": True}
        trainer = Trainer(model=load_causal_lm(s["model"], device), args=Config(beta=s["beta"], **own, **common), train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Record()])
    else:
        from trl import RewardConfig, RewardTrainer

        tokenizer.pad_token = score_pad_token(tokenizer)
        trainer = RewardTrainer(model=load_reward_model(s["model"] or "embedded", device, tokenizer.pad_token_id),
                                args=RewardConfig(center_rewards_coefficient=None, **common),
                                train_dataset=dataset, processing_class=tokenizer, callbacks=[Record()])
    trainer.train()
    return {"losses": losses, "stamps": stamps}


def worker(side: str, s: dict, data: Path, result: Path) -> None:
    import torch

    torch.set_num_threads(s["threads"])
    found = (run_rlaif if side == "rlaif" else run_trl)(s, data, result.with_suffix(""))
    steps = [b - a for a, b in zip(found["stamps"], found["stamps"][1:])]
    gpu_peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    result.write_text(json.dumps({"losses": found["losses"], "step_s": statistics.median(steps), "gpu_peak_gib": gpu_peak}))


# ---------------------------------------------------------------- the driver


def table(s: dict, runs: list[dict]) -> str:
    pairs = s["steps"] * s["batch_size"]
    rows = {}
    for side in ("rlaif", "trl"):
        mine = [r for r in runs if r["side"] == side]
        rows[side] = {k: statistics.median(r[k] for r in mine) for k in ("wall_s", "step_s", "peak_gib")}
    peer = "TRL " + {"dpo": "DPOTrainer", "rm": "RewardTrainer", "simpo": "CPOTrainer (simpo)", "orpo": "ORPOTrainer",
                     "kto": "KTOTrainer"}[s["method"]]
    lines = [("| | runs | whole process (median) | pairs/s, whole process | optimizer step after the first (median) "
              "| pairs/s in training | peak memory (median) |"),
             "|---|---|---|---|---|---|---|"]
    for side, name in (("rlaif", f"rlaif --method {s['method']}"), ("trl", peer)):
        r = rows[side]
        lines.append(f"| {name} | {sum(x['side'] == side for x in runs)} | {r['wall_s']:.1f} s | "
                     f"{pairs / r['wall_s']:.3f} | {r['step_s']:.2f} s | "
                     f"{s['batch_size'] / r['step_s']:.2f} | {r['peak_gib']:.2f} GiB |")
    a, b = rows["rlaif"], rows["trl"]
    lines.append(f"| rlaif / TRL | | {b['wall_s'] / a['wall_s']:.2f}x faster | | {b['step_s'] / a['step_s']:.2f}x faster | | "
                 f"{a['peak_gib'] / b['peak_gib']:.2f}x the memory |")
    ours = next(r["losses"] for r in runs if r["side"] == "rlaif")
    theirs = next(r["losses"] for r in runs if r["side"] == "trl")
    lines += ["", "| step | " + " | ".join(str(i + 1) for i in range(len(ours))) + " |", "|---" * (len(ours) + 1) + "|",
              "| rlaif loss | " + " | ".join(f"{x:.4f}" for x in ours) + " |",
              "| TRL loss | " + " | ".join(f"{x:.4f}" for x in theirs) + " |",
              "", f"largest per-step loss difference: {max(abs(x - y) for x, y in zip(ours, theirs)):.2e} over {len(ours)} steps"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("dpo", "rm", "simpo", "orpo", "kto"), default="dpo")
    parser.add_argument("--pairs", type=int, default=64, help="pairs in the data set")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None, help="[default: 1e-6 for dpo, 1e-5 for rm]")
    parser.add_argument("--beta", type=float, default=None, help="[default: the method's own]")
    parser.add_argument("--target-margin", type=float, default=1.0, help="simpo: γ")
    parser.add_argument("--bf16", action="store_true", help="both sides in bfloat16 autocast (TRL's default)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="both sides (TRL's default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="a model directory [default: the embedded model]")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--worker", choices=("rlaif", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings), args.data, args.result)
        return
    if args.lr is None:
        args.lr = 1e-5 if args.method == "rm" else 1e-6
    if args.beta is None:
        args.beta = METHODS[args.method].defaults.get("beta", 0.1)
    s = settings(args)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ours, theirs, _ = write_inputs(workdir, args.method, args.pairs, args.max_length, args.batch_size, args.steps, args.model)
        runs = alternate(__file__, {"rlaif": ["--data", str(ours)], "trl": ["--data", str(theirs)]}, s, args.runs, workdir)
    print(json.dumps(s))
    print(table(s, runs))


if __name__ == "__main__":
    main()
