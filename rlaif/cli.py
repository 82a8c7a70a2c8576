"""The `rlaif` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import get_type_hints

import click

from rlaif.debias import MODES as DEBIAS_MODES
from rlaif.errors import UserError
from rlaif.judge import DEFAULT_JUDGE, MODES
from rlaif.labeling import LabelConfig

MODE_HELP = ("pairwise: the two responses side by side (debiased over orders); pointwise: each response scored alone, "
             "so no position bias [default: the judge's own: pairwise, a reward model's pointwise].")


class Group(click.Group):
    """Prints the user's mistakes (bad input, templates, configs) as one clear line; anything
    else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=Group)
@click.version_option(package_name="rlaif")
def main() -> None:
    """Turn AI feedback into preference data, and train on it."""


@main.command()
@click.option("--input", "input_path", required=True, help="JSONL/JSON/CSV/Parquet (.gz too), a saved dataset directory, or a Hugging Face data set: hf:OWNER/NAME?data_dir=DIR&split=SPLIT.")
@click.option("--output", default=None, help="Output directory [default: outputs/<input name>].")
@click.option("--rubric", default="quality", show_default=True, help="Built-in rubric name or path to a Jinja2 template.")
@click.option("--judge", default=DEFAULT_JUDGE, show_default=True, help="Built-in judge name or path to a judge config.")
@click.option("--mode", type=click.Choice(MODES), default=None, help=MODE_HELP)
@click.option("--cot", is_flag=True, help="Ask for a rationale first, then the verdict.")
@click.option("--debias", type=click.Choice(DEBIAS_MODES), default="both", show_default=True, help="Judge each pair in both orders, one random order, or as given (pairwise).")
@click.option("--drop-inconsistent", is_flag=True, help="Leave out pairs whose two orders disagree.")
@click.option("--min-confidence", type=float, default=None, help="Leave out pairs with ai_preference below this (0.5-1).")
@click.option("--limit", type=int, default=None, help="Read at most this many input rows.")
@click.option("--skip-invalid", is_flag=True, help="Count bad rows into failures.jsonl instead of stopping.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--generator", default=None, help="What writes candidates for prompt-only rows: a model name or directory, or a judge config (built-in name or file; backend local, openai for any OpenAI-compatible server, or vllm) [default: embedded].")
@click.option("--num-responses", type=int, default=2, show_default=True, help="Candidates to generate per prompt-only row.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="Length of generated candidates.")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="Sampling temperature of the generator.")
@click.option("--cache", default=None, help="Answer cache file [default: <output>/cache.sqlite].")
@click.option("--concurrency", type=int, default=None, help="Judge calls in flight at once (API judges) [default: the judge config's].")
@click.option("--batch-api", is_flag=True, help="OpenAI Batch API: submit the calls, keep the batch id in the output directory, collect on the next run.")
@click.option("--dry-run", is_flag=True, help="Print the calls, tokens and cost a run would take; call nothing.")
@click.option("--chunk-size", type=int, default=LabelConfig.chunk_size, show_default=True, help="Input rows read, judged and written to pairs.jsonl at a time; a killed run resumes after the last chunk written.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def label(input_path: str, quiet: bool, **options) -> None:
    """Label response pairs with an AI judge."""
    from rlaif.labeling import label as run_label

    try:
        result = run_label(LabelConfig(input=input_path, progress=not quiet, **options))
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: every answer received so far is in the cache; run the same command again to resume") from None
    if (b := result.pending_batch) is not None:
        click.echo(f"batch {b['batch_id']} ({b['requests']} requests) is {b['status']}; run the same command again to collect it")
        return
    if (d := result.estimate) is not None:
        click.echo(f"{d['pairs']} pairs: {d['calls']} judge calls to make, {d['cached']} already cached")
        click.echo(f"estimated tokens: ~{d['tokens']['prompt']} in, up to {d['tokens']['completion']} out" + (f"; estimated cost: {d['estimated_cost']:.4f}" if d["estimated_cost"] is not None else " (no prices in the judge config)"))
        if d["prompt_only_rows"]:
            click.echo(f"{d['prompt_only_rows']} prompt-only rows need candidates generated first; their calls are not counted")
        return
    m = result.manifest
    counts = m["counts"]
    rate = m["first_position_rate"]
    click.echo(f"labeled {counts['labeled']} of {counts['pairs']} pairs -> {result.output_dir / 'pairs.jsonl'}")
    how = ("pointwise: each response scored alone, one call per distinct response" if m["mode"] == "pointwise"
           else f"consistent across orders: {counts['consistent']}, inconsistent: {counts['inconsistent']}")
    click.echo(
        f"{how}; skipped: {sum(counts['skipped'].values())}; failed: {sum(counts['failed'].values())}; "
        f"filtered: {sum(counts['filtered'].values())}"
    )
    if rate["raw"] is not None:
        click.echo(f"first-position rate: raw judgments {100 * rate['raw']:.1f}%, final labels {100 * rate['labels']:.1f}%")
    click.echo(
        f"judge calls: {m['judge_calls']['made']} made, {m['judge_calls']['cached']} from cache; "
        f"tokens: {m['tokens']['prompt']} in, {m['tokens']['completion']} out; {m['wall_time_s']:.1f}s"
        + (f"; estimated cost: {m['estimated_cost']:.4f}" if m["estimated_cost"] is not None else "")
    )
    v = m["verdicts"]
    click.echo(f"verdicts: {v['soft']} soft (label probabilities), {v['unreadable']} unreadable, of {m['judge_calls']['total']} answers")


@main.command("gguf-path")
def gguf_path() -> None:
    """Print the path of the embedded model's GGUF file (to serve it with llama.cpp's server)."""
    from rlaif.models import embedded_gguf_path

    click.echo(embedded_gguf_path())


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def agreement(run_dir: str, as_json: bool) -> None:
    """Agreement of a run's AI labels with human labels, and the judge's biases."""
    from rlaif.agreement import agreement as compute
    from rlaif.agreement import format_report

    report = compute(run_dir)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def train_options(command):
    """One option per `TrainConfig` field, with the field's help, default and choices."""
    from rlaif.trainers.config import TrainConfig, allowed_types

    hints = get_type_hints(TrainConfig)
    for f in reversed(fields(TrainConfig)):
        if "help" not in f.metadata:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        kind = next(t for t in allowed_types(hints[f.name]) if t is not type(None))
        if kind is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}" if default else flag, f.name, default=default, is_flag=True, help=f.metadata["help"])
        else:
            choices = f.metadata.get("choices")
            option = click.option(flag, f.name, type=click.Choice(choices) if choices else kind, default=default, show_default=default is not None, help=f.metadata["help"])
        command = option(command)
    return command


@main.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None, help="TOML/YAML file with any of these settings; the command line wins.")
@train_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx: click.Context, config_file: str | None, quiet: bool, **options) -> None:
    """Train with --method sft|rm|dpo on preference data, or ppo|grpo on prompts."""
    from rlaif.trainers import TrainConfig, read_config_file
    from rlaif.trainers import train as run_train

    settings = read_config_file(config_file) if config_file else {}
    for name, value in options.items():
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE or name not in settings:
            settings[name] = value
    for required in ("method", "data"):
        if not settings.get(required):
            raise click.UsageError(f"--{required} is required (on the command line or in --config)")
    settings["output"] = settings.get("output") or f"outputs/{settings['method']}"
    config = TrainConfig(progress=not quiet, **settings)
    results = run_train(config)
    click.echo(f"saved to {config.output}")
    for name, value in results.items():
        click.echo(f"{name}: {value:.4f}")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--eval-data", required=True, help="Evaluation prompts (any input `rlaif label` reads); rows with a human-preferred response also give reference metrics.")
@click.option("--output", required=True, help="Output directory: report.md, metrics.json, responses.jsonl, judgments.jsonl, PNG figures, cache.sqlite.")
@click.option("--judge", default=DEFAULT_JUDGE, show_default=True, help="Judge of policy against base (built-in name or config file).")
@click.option("--rubric", default="quality", show_default=True, help="Rubric for the judge.")
@click.option("--mode", type=click.Choice(MODES), default=None, help=MODE_HELP)
@click.option("--gold-rm", default=None, help="Gold reward model: an `rlaif train --method rm` output or any sequence classifier directory.")
@click.option("--labels", "labels", multiple=True, type=click.Path(exists=True, file_okay=False), help="An `rlaif label` run with human labels: agreement and confusion matrix (repeatable).")
@click.option("--rm", "rms", multiple=True, type=click.Path(exists=True, file_okay=False), help="A reward model to score on the evaluation pairs (repeatable).")
@click.option("--samples", type=int, default=1, show_default=True, help="Responses per prompt and policy.")
@click.option("--all-pairs", is_flag=True, help="Also judge every trained policy against every other.")
@click.option("--limit", type=int, default=None, help="Use at most this many evaluation prompts.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bertscore-model", default=None, help="Model for BERTScore [default: the embedded model].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compare(runs: tuple[str, ...], labels: tuple[str, ...], rms: tuple[str, ...], quiet: bool, **options) -> None:
    """Compare trained policies with their base: win rates, gold reward, KL, reference metrics."""
    from rlaif.compare import CompareConfig
    from rlaif.compare import compare as run_compare

    config = CompareConfig(runs=list(runs), labels=list(labels), rms=list(rms), progress=not quiet, **options)
    run_compare(config)
    click.echo((Path(config.output) / "report.md").read_text())


@main.command()
@click.option("--prompts", required=True, help="Prompts (any input `rlaif label` reads; only the prompts are used).")
@click.option("--eval-data", required=True, help="Held-out prompts on which every round's policy is compared with the start.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Rounds of sample -> label -> train.")
@click.option("--output", default="outputs/iterate", show_default=True, help="Output directory: round-N/ per round, rounds.md, and the comparison's report.md.")
@click.option("--model", default=None, help="The starting policy [default: the embedded model].")
@click.option("--method", default="dpo", show_default=True, help="dpo (on each round's pairs) or ppo (a reward model updated on them, and ppo against it).")
@click.option("--judge", default=DEFAULT_JUDGE, show_default=True, help="Judge of each round's samples, and of the final comparison.")
@click.option("--rubric", default="quality", show_default=True)
@click.option("--num-responses", type=int, default=2, show_default=True, help="Samples per prompt and round (K); every pair of them is judged.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, default=0.8, show_default=True)
@click.option("--limit", type=int, default=None, help="Use at most this many prompts.")
@click.option("--eval-limit", type=int, default=None, help="Use at most this many evaluation prompts.")
@click.option("--gold-rm", default=None, help="A gold reward model: its mean score of each round's policy.")
@click.option("--train-config", type=click.Path(exists=True, dir_okay=False), default=None, help="TOML/YAML with `rlaif train` settings for each round's policy training (lr, max_steps, beta, ...).")
@click.option("--rm-config", type=click.Path(exists=True, dir_okay=False), default=None, help="--method ppo: settings of each round's reward-model training.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def iterate(train_config: str | None, rm_config: str | None, quiet: bool, **options) -> None:
    """Online RLAIF: the policy samples, the judge labels, DPO (or RM + PPO) trains, for --rounds;
    then every round's policy is compared with the start."""
    from rlaif.iterate import IterateConfig
    from rlaif.iterate import iterate as run_iterate
    from rlaif.trainers import read_config_file

    config = IterateConfig(train=read_config_file(train_config) if train_config else {}, rm_train=read_config_file(rm_config) if rm_config else {},
                           progress=not quiet, **options)
    run_iterate(config)
    click.echo((Path(config.output) / "rounds.md").read_text())


@main.command()
@click.option("--input", "input_path", required=True, help="Rows to revise (any input `rlaif label` reads): each response is critiqued and revised; prompt-only rows get responses generated first.")
@click.option("--output", default=None, help="Output directory [default: outputs/<input name>-revised].")
@click.option("--constitution", default="constitution", show_default=True, help="Built-in name or path of a Jinja2 template with the principles (see prompts/constitution.j2).")
@click.option("--judge", default=DEFAULT_JUDGE, show_default=True, help="Who critiques and revises: a model name or directory, or a judge config (backend local, openai or vllm).")
@click.option("--num-responses", type=int, default=1, show_default=True, help="Responses to generate for a prompt-only row.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--limit", type=int, default=None, help="Read at most this many input rows.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def revise(input_path: str, quiet: bool, **options) -> None:
    """Critique each response against principles and rewrite it (Constitutional AI): (revised,
    original) preference pairs for `rlaif train`."""
    from rlaif.revision import ReviseConfig
    from rlaif.revision import revise as run_revise

    config = ReviseConfig(input=input_path, progress=not quiet, **options)
    m = run_revise(config)
    c = m["counts"]
    click.echo(f"revised {c['revised']} of {c['responses']} responses -> {config.output_dir() / 'pairs.jsonl'}")
    click.echo(f"unchanged: {c['unchanged']}; failed: {sum(c['failed'].values())}; {m['wall_time_s']:.1f}s")


@main.command()
@click.argument("judgments", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Resamples of the prompts for the 95% intervals.")
@click.option("--k", type=float, default=32.0, show_default=True, help="Elo's K: how far one game moves a rating.")
@click.option("--l2", type=float, default=0.01, show_default=True, help="Bradley–Terry's L2 penalty on θ (keeps a player who won every game finite).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", default=None, help="Also write the ratings to this JSON file.")
@click.option("--json", "as_json", is_flag=True, help="Print the ratings as JSON.")
def rate(judgments: tuple[str, ...], bootstrap: int, k: float, l2: float, seed: int, output: str | None, as_json: bool) -> None:
    """Elo and Bradley–Terry ratings, with bootstrap intervals, from pairwise judgments: `rlaif
    compare` output directories or judgments.jsonl files, or battles (model_a, model_b, winner)."""
    from rlaif.files import write_json_atomic
    from rlaif.ratings import format_ratings, ratings, read_games

    result = ratings(read_games(judgments), bootstrap, k, l2, seed)
    if output:
        write_json_atomic(Path(output), result)
    click.echo(json.dumps(result, indent=2) if as_json else format_ratings(result))


@main.command()
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--quiet", is_flag=True, help="No progress bars.")
def experiment(config_file: str, quiet: bool) -> None:
    """Run an AI-vs-human experiment file: label, agreement, DPO on each, gold RM, compare."""
    from rlaif.experiment import read_experiment, run_experiment

    run_experiment(config_file, progress=not quiet)
    click.echo((Path(read_experiment(config_file).get("output", "outputs/experiment")) / "report.md").read_text())


@main.command()
@click.argument("name_or_path")
@click.option("--cot", is_flag=True, help="Show the chain-of-thought form.")
@click.option("--mode", type=click.Choice(MODES), default="pairwise", show_default=True, help="Show the pairwise or the pointwise form.")
def rubric(name_or_path: str, cot: bool, mode: str) -> None:
    """Show what a rubric renders to on a sample pair (checks a custom template)."""
    from rlaif.rubric import SAMPLE, load_rubric

    r = load_rubric(name_or_path)
    if mode == "pointwise":
        click.echo(f"# {r.path}  scale={list(r.scale or [])}  rating_prefix={r.rating_prefix!r}  sha256={r.sha256[:12]}", err=True)
        sys.stdout.write(r.render_rating(SAMPLE["prompt"], SAMPLE["response_a"], cot))
        return
    click.echo(f"# {r.path}  labels={list(r.labels)}  verdict_prefix={r.verdict_prefix!r}  sha256={r.sha256[:12]}", err=True)
    sys.stdout.write(r.render(SAMPLE["prompt"], SAMPLE["response_a"], SAMPLE["response_b"], cot))


if __name__ == "__main__":
    main()
