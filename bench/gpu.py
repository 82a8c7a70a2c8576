"""rlaif on one GPU: its CUDA paths checked, and its trainers and local judge timed beside their
peers, as a share of the chip's peak. Prints one table.

Correctness, on the embedded model's architecture and tokenizer with random weights (its 94 MB
of trained weights do not fit what can be carried to a GPU machine; none of the checks needs
them): DPO's first loss under --bf16 (the policy is its own reference, so it is log 2), a LoRA
DPO step, the packed pairs' log-probabilities against each sequence's own forward pass, and the
local judge's label probabilities against a `generate` call per order.

Speed, on a Llama of about 1.2B parameters built from a config (random weights: speed does not
depend on them): `bench/trainers_vs_trl.py` for DPO and the reward model, --bf16, with and
without --gradient-checkpointing, the sides alternating; then `bench/local_judge_speed.py`.
MFU = 6 · N · T / step time / peak, with N the parameters that multiply: the transformer blocks,
plus the output head for DPO (a reward model has a one-score head instead; the input
embeddings are a lookup), and T the tokens of the step's chosen and rejected sequences, counted alike for
both sides (DPO's reference forward pass is left out of both: each computes it once up front).

    make gpu-bundle                 # here: the wheels and tokenizer it needs, into .gpu/ (< 64 MiB)
    python bench/gpu.py             # on the GPU machine, after installing .gpu/wheels (docs/benchmarks.md)
    python bench/gpu.py --tiny      # anywhere: the same script on tiny models, a few steps (the suite runs it)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import local_judge_speed  # this folder's own scripts (bench/ is on the path when run): local_judge_speed, trainers_vs_trl, harness
import torch
import trainers_vs_trl
from harness import ROOT, alternate
from transformers import LlamaConfig, LlamaForCausalLM

from rlaif.models.loading import load_tokenizer
from rlaif.trainers import TrainConfig, train, trainer_for

DATA = ROOT / "examples" / "hh-harmless.jsonl.gz"
H200_BF16_PEAK = 989.4e12  # dense bf16 FLOP/s of an H100/H200 SXM, as NVIDIA specifies it

# Llama shapes: the embedded model's (SmolLM2-135M-Instruct) and one of about 1.2B parameters.
SHAPES = {
    "embedded": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
                 "tie_word_embeddings": True},
    "1.2b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192,
             "tie_word_embeddings": False},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
             "tie_word_embeddings": False},
}


def build_model(out: Path, shape: str, tokenizer_dir: str | None) -> tuple[str, dict[str, int]]:
    """A Llama of `shape` with random weights and the embedded model's tokenizer, saved as a model
    directory; returns it and N of each method (see the module's docstring)."""
    tokenizer = load_tokenizer(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=8192, rope_theta=100000.0, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **SHAPES[shape])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    blocks = sum(p.numel() for p in model.model.layers.parameters())
    return str(out), {"dpo": blocks + model.lm_head.weight.numel(), "rm": blocks + config.hidden_size}


def first_losses(model: str, out: Path, **settings) -> list[float]:
    train(TrainConfig(method="dpo", model=model, data=f"{DATA}?rows=0:16", output=str(out), batch_size=4, max_length=256, lr=1e-5,
                      progress=False, **settings))
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def sequence_logps(model, seq: dict) -> float:
    """A response's summed log-probability from the sequence's own forward pass."""
    ids = torch.tensor([seq["input_ids"]], device=model.device)
    labels = torch.tensor(seq["labels"][1:], device=model.device)
    logps = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
    keep = labels != -100
    return logps[keep].gather(-1, labels[keep][:, None]).sum().item()


@torch.no_grad()
def packed_against_own(model_dir: str, out: Path) -> float:
    """The largest difference between the packed pairs' log-probabilities (DPO's forward pass) and
    each sequence's own forward pass, relative to the log-probability's size."""
    trainer = trainer_for(TrainConfig(method="dpo", model=model_dir, data=f"{DATA}?rows=0:8", output=str(out),
                                      max_length=256, progress=False))
    out.mkdir()
    trainer.setup(None)
    pairs = trainer.train_pairs
    chosen, rejected, _ = trainer.pair_logps(trainer.model, pairs)
    packed = chosen.tolist() + rejected.tolist()
    own = [sequence_logps(trainer.model, pair.chosen) for pair in pairs] + [sequence_logps(trainer.model, pair.rejected) for pair in pairs]
    return max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(packed, own))


def correctness(model_dir: str, work: Path) -> list[tuple[str, str, bool]]:
    """(check, what it found, passed) for each check on the embedded architecture."""
    rows = []
    loss = first_losses(model_dir, work / "dpo-bf16", max_steps=1, bf16=True)[0]
    rows.append(("DPO first loss, --bf16 (policy = reference: log 2)", f"{loss:.6f} (log 2 = {math.log(2):.6f})",
                 abs(loss - math.log(2)) < 1e-3))
    lora = first_losses(model_dir, work / "dpo-lora", max_steps=2, bf16=True, lora_r=8)
    rows.append(("LoRA DPO, two steps, --bf16", " then ".join(f"{x:.4f}" for x in lora),
                 len(lora) == 2 and abs(lora[0] - math.log(2)) < 1e-3 and all(math.isfinite(x) for x in lora)))
    diff = packed_against_own(model_dir, work / "packed")
    rows.append(("packed pairs' log-probabilities vs each sequence alone (fp32)", f"largest relative difference {diff:.1e}", diff < 1e-4))
    requests = local_judge_speed.requests(6, "quality")
    ours, _ = local_judge_speed.run_rlaif(requests, model_dir)
    theirs, _ = local_judge_speed.run_generate(requests, 1, model_dir)
    largest = max(abs(a - b) for a, b in zip(ours, theirs))
    rows.append(("local judge P(first) vs a generate call per order",
                 f"largest difference {largest:.1e} over {len(ours)} calls", largest < 1e-3))
    return rows


def matmul_peak(size: int) -> float:
    """The bf16 FLOP/s of a size³ matrix product, the mean of 10 after 3 warm-ups."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    return 10 * 2 * size**3 / (time.perf_counter() - start)


def training_rows(model_dir: str, n_params: dict[str, int], args: argparse.Namespace, work: Path, peak: float) -> list[list[str]]:
    rows = []
    for method in ("dpo", "rm"):
        for checkpointing in (False, True):
            s = {"method": method, "batch_size": args.batch_size, "max_length": args.max_length, "lr": 1e-6 if method == "dpo" else 1e-5,
                 "steps": args.steps, "beta": 0.1, "seed": 0, "threads": 4, "bf16": True,
                 "gradient_checkpointing": checkpointing, "model": model_dir}
            run_dir = work / f"{method}-{checkpointing}"
            run_dir.mkdir()
            ours, theirs, tokens = trainers_vs_trl.write_inputs(run_dir, method, args.steps * args.batch_size,
                                                                args.max_length, args.batch_size, args.steps, model_dir)
            runs = alternate(trainers_vs_trl.__file__, {"rlaif": ["--data", str(ours)], "trl": ["--data", str(theirs)]},
                             s, args.runs, run_dir)
            per_step = tokens / args.steps
            for side in ("rlaif", "trl"):
                mine = [r for r in runs if r["side"] == side]
                step_s = sorted(r["step_s"] for r in mine)[len(mine) // 2]
                gpu = mine[0]["gpu_peak_gib"]
                name = f"{'rlaif' if side == 'rlaif' else 'TRL'} {method}{', gradient checkpointing' if checkpointing else ''}"
                rows.append([name, f"{per_step / step_s:,.0f} tokens/s", f"{6 * n_params[method] * per_step / step_s / peak:.1%}",
                             "n/a" if gpu is None else f"{gpu:.1f} GiB", f"first losses {mine[0]['losses'][0]:.4f}"])
    return rows


def judge_row(model_dir: str, args: argparse.Namespace, work: Path) -> list[str]:
    s = {"pairs": args.judge_pairs, "rubric": "quality", "max_new_tokens": 8, "threads": 4, "model": model_dir}
    runs = alternate(local_judge_speed.__file__, {"rlaif": [], "generate": []}, s, args.runs, work)
    rate = {side: args.judge_pairs / min(r["judging_s"] for r in runs if r["side"] == side) for side in ("rlaif", "generate")}
    ours, theirs = (next(r["p_first"] for r in runs if r["side"] == side) for side in ("rlaif", "generate"))
    differ = sum((a > 0.5) != (b > 0.5) for a, b in zip(ours, theirs))
    return ["local judge, both orders of each pair", f"{rate['rlaif']:.2f} pairs/s; generate per order {rate['generate']:.2f}",
            f"{rate['rlaif'] / rate['generate']:.1f}x the peer's rate", "", f"decisions that differ: {differ} of {len(ours)}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny models and a few steps (a check that the script runs, on any machine)")
    parser.add_argument("--tokenizer", default=None,
                        help="a tokenizer directory [default: the embedded model's; .gpu/tokenizer on the GPU machine]")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per training run [default: 10; 3 with --tiny]")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--runs", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--judge-pairs", type=int, default=None, help="[default: 33; 3 with --tiny]")
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.tiny else 10)
    args.judge_pairs = args.judge_pairs or (3 if args.tiny else 33)
    if args.tiny:
        args.batch_size, args.max_length = min(args.batch_size, 2), min(args.max_length, 192)
    cuda = torch.cuda.is_available()
    chip = torch.cuda.get_device_name() if cuda else "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small, _ = build_model(work / "embedded-shape", "tiny" if args.tiny else "embedded", args.tokenizer)
        large, n_params = build_model(work / "large", "tiny" if args.tiny else "1.2b", args.tokenizer)
        checks = correctness(small, work)
        measured = matmul_peak(8192) if cuda else None
        peak = H200_BF16_PEAK if cuda else 1e12  # on a CPU the share means nothing; the run only shows the script works
        trained = training_rows(large, n_params, args, work, peak)
        judged = judge_row(large, args, work)
    print(f"# {chip}, torch {torch.__version__}; large model: N = {n_params['dpo'] / 1e9:.2f}B (DPO), "
          f"{n_params['rm'] / 1e9:.2f}B (reward model); "
          f"MFU against {peak / 1e12:.0f} TFLOP/s" + (f" (an 8192³ bf16 product ran at {measured / 1e12:.0f} here)" if measured else ""))
    lines = ["| what | found | MFU, or the check's result | peak GPU memory | note |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {found} | {'pass' if ok else 'FAIL'} | | |" for name, found, ok in checks]
    lines += ["| " + " | ".join(row) + " |" for row in trained]
    lines.append("| " + " | ".join(judged) + " |")
    print("\n".join(lines))
    if not all(ok for _, _, ok in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
