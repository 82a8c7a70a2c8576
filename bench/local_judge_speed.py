"""rlaif's local judge against a generate-based local judge, side by side: debiased pairs per second.

The peer judges as generate-based local judges do: one pair at a time, one `generate` call
per order (greedy, stopping at the model's end of turn, at most --max-new-tokens), reading the
verdict's probabilities from the first generated step's logits. rlaif's `LocalJudge` gets the
same requests (both orders of every pair, the same rubric text), so both must give the same
verdicts: the script reports the largest difference in P(first response) and how many
decisions differ. Each run is a whole process (model loading included in its wall time, not
in its judging time); the sides alternate.

    pip install -e '.[bench]'
    python bench/local_judge_speed.py --pairs 33 --runs 3
    python bench/local_judge_speed.py --pairs 33 --profile   # where rlaif's judging time goes

`--model DIR` judges with another model (on a GPU where there is one: bench/gpu.py runs it there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness import ROOT, alternate  # this folder's own module (bench/ is on the path when run)

DATA = ROOT / "examples" / "hh-harmless.jsonl.gz"


def requests(pairs: int, rubric_name: str) -> list:
    """Both orders of the first `pairs` pairs, as `rlaif label` asks them."""
    from rlaif.inputs import load_examples
    from rlaif.judging.base import JudgeRequest
    from rlaif.judging.rubric import load_rubric

    rubric = load_rubric(rubric_name)
    out = []
    for ex in load_examples(f"{DATA}?rows=0:{pairs}").examples:
        a, b = ex.responses
        out += [JudgeRequest(rubric.render(ex.prompt, x, y), rubric.labels, rubric.verdict_prefix) for x, y in ((a, b), (b, a))]
    return out


def run_rlaif(reqs: list, model: str | None) -> tuple[list[float], dict]:
    from rlaif.judging.base import JudgeConfig
    from rlaif.judging.configs import load_judge

    judge = load_judge("embedded") if model is None else load_judge(JudgeConfig("bench", "local", model, {"temperature": 0.0}))
    found: dict[int, float] = {}
    start = time.perf_counter()
    judge.judge(reqs, lambda i, verdict: found.__setitem__(i, verdict.p_first))
    return [found[i] for i in range(len(reqs))], {"judging_s": time.perf_counter() - start}


def run_generate(reqs: list, max_new_tokens: int, model_dir: str | None) -> tuple[list[float], dict]:
    import torch

    from rlaif.judging.backends.prefilled import label_distribution
    from rlaif.models.loading import chat_prompt, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir)
    found, generated = [], []
    start = time.perf_counter()
    for r in reqs:  # one pair's two orders after the other, each its own generate call
        ids = tokenizer(chat_prompt(tokenizer, r.prompt) + r.verdict_prefix, add_special_tokens=False, return_tensors="pt").to(model.device)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, top_p=None, top_k=None, temperature=None,
                                 output_logits=True, return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
        found.append(label_distribution(out.logits[0], tokenizer, r.labels)[0, 0].item())
        generated.append(out.sequences.shape[1] - ids["input_ids"].shape[1])
    return found, {"judging_s": time.perf_counter() - start, "generated_tokens": statistics.mean(generated)}


def worker(side: str, s: dict, result: Path) -> None:
    import torch

    torch.set_num_threads(s["threads"])
    reqs = requests(s["pairs"], s["rubric"])
    model = s.get("model")
    p_first, extra = run_rlaif(reqs, model) if side == "rlaif" else run_generate(reqs, s["max_new_tokens"], model)
    result.write_text(json.dumps({"p_first": p_first, **extra}))


def profile(s: dict) -> None:
    """Tokens the requests hold and what is left once shared prefixes are computed once; then
    the operators rlaif's judge spends its time in."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from rlaif.judging.configs import load_judge
    from rlaif.models.loading import chat_prompt
    from rlaif.models.packing import common_prefix_length

    torch.set_num_threads(s["threads"])
    reqs = requests(s["pairs"], s["rubric"])
    judge = load_judge("embedded")
    seqs = [judge.tokenizer(chat_prompt(judge.tokenizer, r.prompt) + r.verdict_prefix, add_special_tokens=False)["input_ids"] for r in reqs]
    common = min(common_prefix_length(seqs[0], x) for x in seqs)
    pairs = [(a, b) for a, b in zip(seqs[::2], seqs[1::2])]
    after = common + sum(len(a) + len(b) - common_prefix_length(a, b) - common for a, b in pairs)
    print(f"tokens in the {len(seqs)} requests: {sum(map(len, seqs))}; shared by all: {common}; "
          f"left to compute with the shared prefix once and each pair's common beginning once: {after}")
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        judge.judge(reqs, lambda i, verdict: None)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


def table(s: dict, runs: list[dict]) -> str:
    med = {side: {k: statistics.median(r[k] for r in runs if r["side"] == side)
                  for k in ("judging_s", "wall_s", "peak_gib")} for side in ("rlaif", "generate")}
    n = sum(r["side"] == "rlaif" for r in runs)
    gen = next(r for r in runs if r["side"] == "generate")
    lines = ["| judge | runs | judging time (median) | debiased pairs/s | whole process (median) | peak memory (median) |",
             "|---|---|---|---|---|---|"]
    for side, name in (("rlaif", "rlaif LocalJudge (one forward pass, shared prefixes)"),
                       ("generate", f"generate per order, one pair at a time ({gen['generated_tokens']:.1f} tokens generated per call)")):
        m = med[side]
        lines.append(f"| {name} | {n} | {m['judging_s']:.1f} s | {s['pairs'] / m['judging_s']:.2f} | "
                     f"{m['wall_s']:.1f} s | {m['peak_gib']:.2f} GiB |")
    lines.append(f"| rlaif / generate | | {med['generate']['judging_s'] / med['rlaif']['judging_s']:.2f}x faster | | "
                 f"{med['generate']['wall_s'] / med['rlaif']['wall_s']:.2f}x faster | "
                 f"{med['rlaif']['peak_gib'] / med['generate']['peak_gib']:.2f}x the memory |")
    ours, theirs = next(r for r in runs if r["side"] == "rlaif")["p_first"], gen["p_first"]
    differ = sum((x > 0.5) != (y > 0.5) for x, y in zip(ours, theirs))
    lines += ["", (f"verdicts: largest difference in P(first) {max(abs(x - y) for x, y in zip(ours, theirs)):.1e} over {len(ours)} calls; "
              f"decisions that differ: {differ}")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=33)
    parser.add_argument("--rubric", default="quality")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="the peer's generation budget (it stops at end of turn)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="a model directory [default: the embedded model]")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--profile", action="store_true", help="profile rlaif's judge instead of the side-by-side runs")
    parser.add_argument("--worker", choices=("rlaif", "generate"), help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings), args.result)
        return
    s = {"pairs": args.pairs, "rubric": args.rubric, "max_new_tokens": args.max_new_tokens, "threads": args.threads, "model": args.model}
    if args.profile:
        profile(s)
        return
    with tempfile.TemporaryDirectory() as tmp:
        runs = alternate(__file__, {"rlaif": [], "generate": []}, s, args.runs, Path(tmp))
    print(json.dumps(s))
    print(table(s, runs))


if __name__ == "__main__":
    main()
