"""One model, three transports: the embedded SmolLM2-135M-Instruct judging the same HH pairs
(both orders, or each response alone with --mode pointwise; the `quality` rubric) through

- `embedded`: the local transformers judge, on the dequantized safetensors copy of the weights;
- `llama-cpp`: llama.cpp in this process, on the model's own Q4_1 GGUF file;
- `llama-cpp-server`: llama.cpp's OpenAI-compatible server on the same file, verdict prefilled;
- with `--f32`, also llama.cpp in this process on an F32 GGUF holding the Q4_1 weights
  dequantized: the weights the transformers judge uses, run by llama.cpp's kernels.

Prints the seconds per pair of each (the labeling runs' judging time, side by side in one run)
and, per call, how far each transport's P(first) is from the others, and how often the pairs'
decisions agree. Every run is an ordinary `rlaif label` run, from an empty output directory (under --output).

Usage: python bench/judge_transports.py [--rows 0:100] [--mode pairwise|pointwise] [--f32] [--output outputs/judge-transports]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test suite's server launcher
from rlaif.judging.configs import resolve_judge_path
from rlaif.labeling.run import LabelConfig, label
from rlaif.models.loading import embedded_gguf_path
from tests.llama_server import llama_server

HH = "examples/hh-harmless.jsonl.gz"


def dequantized_gguf(src: Path, dst: Path) -> Path:
    """A copy of a GGUF file with every tensor dequantized to F32 (the metadata as it is)."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        value = 0 if field.name == gguf.Keys.General.FILE_TYPE else field.contents()  # 0: all F32
        writer.add_key_value(field.name, value, kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def config_file(directory: Path, name: str, backend: str, model: str, **options) -> str:
    lines = [f'backend = "{backend}"', f'model = "{model}"', "[options]", *(f"{k} = {json.dumps(v)}" for k, v in options.items())]
    path = directory / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="0:100")
    parser.add_argument("--mode", choices=("pairwise", "pointwise"), default="pairwise")
    parser.add_argument("--f32", action="store_true", help="also llama.cpp on an F32 GGUF of the dequantized weights")
    parser.add_argument("--output", default="outputs/judge-transports")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count()
    data = f"{HH}?rows={args.rows}"
    judges = {"embedded": "embedded", "llama-cpp": config_file(out, "llama-cpp", "llama_cpp", "embedded", n_ctx=4096, n_threads=threads)}
    if args.f32:
        f32 = out / "SmolLM2-135M-Instruct.F32.gguf"
        if not f32.exists():
            dequantized_gguf(embedded_gguf_path(), f32)
        judges["llama-cpp-f32"] = config_file(out, "llama-cpp-f32", "llama_cpp", str(f32.resolve()), tokenizer="embedded",
                                              n_ctx=4096, n_threads=threads)
    with tempfile.TemporaryDirectory() as tmp, llama_server(Path(tmp) / "server.log", n_threads=threads) as url:
        served = tomllib.loads(resolve_judge_path("llama-cpp-server").read_text())
        judges["llama-cpp-server"] = config_file(out, "llama-cpp-server", "openai", served["model"],
                                                 **{**served["options"], "base_url": url})
        results = {}
        for name, judge in judges.items():
            shutil.rmtree(out / args.mode / name, ignore_errors=True)  # a run from its answer cache would time nothing
            result = label(LabelConfig(data, str(out / args.mode / name), judge=judge, mode=args.mode))
            m = result.manifest
            results[name] = {"calls": calls(result.rows), "chosen": {r["id"]: r["chosen"] for r in result.rows},
                             "s_per_pair": m["timings"]["judging_s"] / m["counts"]["pairs"],
                             "unreadable": m["verdicts"]["unreadable"], "soft": m["verdicts"]["soft"]}
    print(f"\n{len(results['embedded']['chosen'])} pairs, {args.mode}; {threads} threads each\n")
    print("| transport | s / pair | unreadable | soft |")
    print("| --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['s_per_pair']:.3f} | {r['unreadable']} | {r['soft']} |")
    answer = "P(first)" if args.mode == "pairwise" else "score (expected rating, 1-5)"
    print(f"\n| A vs B | mean abs difference of {answer} per call | max | same decision per call | same label per pair |")
    print("| --- | --- | --- | --- | --- |")
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ca, cb = results[a]["calls"], results[b]["calls"]
            keys = sorted(ca.keys() & cb.keys())
            diffs = np.array([abs(ca[k] - cb[k]) for k in keys])
            middle = 0.5 if args.mode == "pairwise" else 3.0  # a call's decision: first preferred, or rated above the middle
            same_call = np.mean([(ca[k] > middle) == (cb[k] > middle) for k in keys])
            pa, pb = results[a]["chosen"], results[b]["chosen"]
            same_pair = np.mean([pa[k] == pb[k] for k in pa.keys() & pb.keys()])
            print(f"| {a} vs {b} | {diffs.mean():.4f} | {diffs.max():.4f} | {100 * same_call:.1f}% | {100 * same_pair:.1f}% |")


def calls(rows: list[dict]) -> dict[tuple[str, str], float]:
    """Every call's answer (P(first), or a pointwise score), by (pair, the response shown first or rated)."""
    found = {}
    for r in rows:
        for item in r.get("orders", r.get("scores", [])):
            which = item.get("first", item.get("response"))
            found[(r["id"], json.dumps(r[which]))] = item.get("p_first", item.get("score"))
    return found


if __name__ == "__main__":
    main()
