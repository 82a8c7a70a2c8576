"""`rlaif revise`: critique and revise, as in Constitutional AI.

For every response of every input row (prompt-only rows first get `num_responses` generated),
the judge model is asked, as a chat, to critique the response against the principles of a
constitution template (`prompts/constitution.j2` or the user's own), then to rewrite it given
its critique. Each (revised, original) pair becomes a row of `pairs.jsonl` in the format
`rlaif label` writes, revised as `chosen`, with the critique kept as evidence, so that
`rlaif train --method dpo|rm|sft` takes it as it is. Every generation goes through the answer
cache (`cache.sqlite`): a killed run, run again, asks only for what is missing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlaif.inputs import Example, Prompt, as_messages, input_name, load_examples, prompt_text
from rlaif.judging.configs import DEFAULT_JUDGE
from rlaif.judging.generation import SAMPLING_TEMPERATURE, generate_responses, load_generator
from rlaif.judging.rubric import SAMPLE, load_template, render_template, resolve_rubric_path
from rlaif.settings import check_settings, required, setting
from rlaif.storage.cache import AnswerCache
from rlaif.storage.files import run_stamp, write_json_atomic, write_jsonl_atomic
from rlaif.storage.locks import writes_into

STAGES = ("critique", "revision")


@dataclass
class ReviseConfig:
    """Everything a revision run depends on; the options of `rlaif revise` are generated from these fields."""

    input: str = required("Rows to revise (any input `rlaif label` reads): each response is critiqued and revised; "
                          "prompt-only rows get responses generated first.")
    output: str | None = setting(None, "Output directory [default: outputs/<input name>-revised].")
    constitution: str = setting("constitution", "Built-in name or path of a Jinja2 template with the principles "
                                "(see prompts/constitution.j2).")
    judge: str = setting(DEFAULT_JUDGE, "Who critiques and revises: a model name or directory, or a judge config "
                         "(backend local, openai or vllm).")
    num_responses: int = setting(1, "Responses to generate for a prompt-only row.", at_least=1)
    max_new_tokens: int = setting(256, "Length of critiques, revisions and generated responses.", at_least=1)
    temperature: float = setting(SAMPLING_TEMPERATURE, "Sampling temperature.", at_least=0)
    limit: int | None = setting(None, "Read at most this many input rows.", at_least=1)
    seed: int = setting(0, "Seeds the sampling.")
    progress: bool = True  # the CLI's --quiet turns it off

    def __post_init__(self) -> None:
        check_settings(self)

    def output_dir(self) -> Path:
        return Path(self.output) if self.output else Path("outputs") / f"{input_name(self.input)}-revised"


class Constitution:
    """A constitution template, rendered in the sandbox into the critique and the revision request."""

    def __init__(self, name_or_path: str):
        self.path = resolve_rubric_path(name_or_path)
        _, self._template, _, self.sha256 = load_template(self.path)
        self.request("critique", SAMPLE["prompt"], SAMPLE["response_a"])  # a broken template fails here, with its line
        self.request("revision", SAMPLE["prompt"], SAMPLE["response_a"], "It is wrong.")

    def request(self, stage: str, prompt: Prompt, response: str, critique: str | None = None) -> str:
        """What the user turn asks at `stage`, about the assistant's `response` to `prompt`."""
        extra = {} if critique is None else {"critique": critique}
        return render_template(self._template, self.path, stage=stage, prompt=prompt_text(prompt), response=response, **extra)


def conversation(prompt: Prompt, response: str, *turns: str) -> list[dict[str, str]]:
    """The chat so far: the prompt, the response, then alternating user and assistant turns."""
    messages = as_messages(prompt, "user") + [{"role": "assistant", "content": response}]
    return messages + [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


@writes_into(lambda cfg: cfg.output_dir())
def revise(cfg: ReviseConfig) -> dict[str, Any]:
    """Critique and revise every response; write `pairs.jsonl`, `failures.jsonl` and
    `manifest.json` to the output directory. Returns the manifest."""
    started = time.time()
    constitution = Constitution(cfg.constitution)
    examples = load_examples(cfg.input, cfg.limit).examples
    out = cfg.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    generator = load_generator(cfg.judge)
    cache = AnswerCache(out / "cache.sqlite")
    failures: list[dict[str, Any]] = []

    def ask(todo: list[Example], n: int, stage: str) -> None:
        with tqdm(total=len(todo), desc=stage, disable=not cfg.progress) as bar:
            errors = generate_responses(todo, generator, n, cfg.max_new_tokens, cfg.temperature, cfg.seed, cache,
                                        on_done=lambda: bar.update(1))
        failures.extend({"id": ex_id, "stage": stage, "error": error} for ex_id, error in errors.items())

    try:
        ask([ex for ex in examples if not ex.responses], cfg.num_responses, "generate")
        originals = [(ex, k, r) for ex in examples for k, r in enumerate(ex.responses) if r.strip()]
        critiques = [Example(f"{ex.id}:{k}", conversation(ex.prompt, r, constitution.request("critique", ex.prompt, r)))
                     for ex, k, r in originals]
        ask(critiques, 1, "critique")
        critiqued = [(ex, r, c) for (ex, _, r), c in zip(originals, critiques) if c.responses]
        revisions = [Example(c.id, conversation(ex.prompt, r, c.prompt[-1]["content"], c.responses[0],
                                                constitution.request("revision", ex.prompt, r, c.responses[0])))
                     for ex, r, c in critiqued]
        ask(revisions, 1, "revision")
    finally:
        generator.close()
        cache.close()
    judge_name = Path(cfg.judge).stem
    rows, unchanged = [], 0
    for (ex, original, critique), rev in zip(critiqued, revisions):
        if not rev.responses:
            continue
        revised = rev.responses[0]
        if not revised.strip() or revised.strip() == original.strip():
            unchanged += 1
            continue
        rows.append({"id": rev.id, "prompt": ex.prompt, "chosen": revised, "rejected": original, "ai_preference": 1.0, "mode": "revision",
                     "critique": critique.responses[0], "judge": judge_name, "constitution": constitution.path.stem})
    write_jsonl_atomic(out / "pairs.jsonl", rows)
    write_jsonl_atomic(out / "failures.jsonl", failures)
    manifest = {
        **run_stamp(),
        "config": asdict(cfg),
        "mode": "revision",
        "judge": {"name": judge_name, **generator.identity()},
        "rubric": {"name": constitution.path.stem, "path": str(constitution.path), "sha256": constitution.sha256},
        "counts": {"examples": len(examples), "responses": len(originals), "revised": len(rows), "unchanged": unchanged,
                   "failed": {stage: sum(f["stage"] == stage for f in failures) for stage in ("generate", *STAGES)}},
        "wall_time_s": round(time.time() - started, 2),
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def summary(manifest: dict[str, Any], out: Path) -> str:
    """What a revision run did, in two lines for a terminal."""
    c = manifest["counts"]
    return (f"revised {c['revised']} of {c['responses']} responses -> {out / 'pairs.jsonl'}\n"
            f"unchanged: {c['unchanged']}; failed: {sum(c['failed'].values())}; {manifest['wall_time_s']:.1f}s")
