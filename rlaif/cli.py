"""The `rlaif` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import sys

import click

from rlaif.data import InputError
from rlaif.judge import DEFAULT_JUDGE, JudgeConfigError, JudgeFatalError
from rlaif.rubric import RubricError

USER_ERRORS = (InputError, RubricError, JudgeConfigError, JudgeFatalError, FileNotFoundError, ValueError)


class Group(click.Group):
    """Prints user errors (bad input, bad templates, bad configs) as one clear line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=Group)
@click.version_option(package_name="rlaif")
def main() -> None:
    """Turn AI feedback into preference data, and train on it."""


@main.command()
@click.option("--input", "input_path", required=True, help="JSONL/JSON/CSV/Parquet (.gz too) or a saved dataset directory.")
@click.option("--output", default=None, help="Output directory [default: outputs/<input name>].")
@click.option("--rubric", default="quality", show_default=True, help="Built-in rubric name or path to a Jinja2 template.")
@click.option("--judge", default=DEFAULT_JUDGE, show_default=True, help="Built-in judge name or path to a judge config.")
@click.option("--cot", is_flag=True, help="Ask for a rationale first, then the verdict.")
@click.option("--debias", type=click.Choice(["both", "random", "none"]), default="both", show_default=True, help="Judge each pair in both orders, one random order, or as given.")
@click.option("--drop-inconsistent", is_flag=True, help="Leave out pairs whose two orders disagree.")
@click.option("--min-confidence", type=float, default=None, help="Leave out pairs with ai_preference below this (0.5-1).")
@click.option("--limit", type=int, default=None, help="Read at most this many input rows.")
@click.option("--skip-invalid", is_flag=True, help="Count bad rows into failures.jsonl instead of stopping.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--generator", default=None, help="Model that writes candidates for prompt-only rows [default: embedded].")
@click.option("--num-responses", type=int, default=2, show_default=True, help="Candidates to generate per prompt-only row.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="Length of generated candidates.")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="Sampling temperature of the generator.")
@click.option("--cache", default=None, help="Answer cache file [default: <output>/cache.sqlite].")
@click.option("--concurrency", type=int, default=None, help="Judge calls in flight at once (API judges) [default: the judge config's].")
@click.option("--batch-api", is_flag=True, help="OpenAI Batch API: submit the calls, keep the batch id in the output directory, collect on the next run.")
@click.option("--dry-run", is_flag=True, help="Print the calls, tokens and cost a run would take; call nothing.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def label(input_path: str, quiet: bool, **options) -> None:
    """Label response pairs with an AI judge."""
    from rlaif.labeling import LabelConfig
    from rlaif.labeling import label as run_label

    try:
        result = run_label(LabelConfig(input=input_path, progress=not quiet, **options))
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: every answer received so far is in the cache; run the same command again to resume") from None
    m = result.manifest
    if "batch" in m:
        b = m["batch"]
        click.echo(f"batch {b['batch_id']} ({b['requests']} requests) is {b['status']}; run the same command again to collect it")
        return
    if "dry_run" in m:
        d = m["dry_run"]
        click.echo(f"{d['pairs']} pairs: {d['calls']} judge calls to make, {d['cached']} already cached")
        click.echo(f"estimated tokens: ~{d['tokens']['prompt']} in, up to {d['tokens']['completion']} out" + (f"; estimated cost: {d['estimated_cost']:.4f}" if d["estimated_cost"] is not None else " (no prices in the judge config)"))
        if d["prompt_only_rows"]:
            click.echo(f"{d['prompt_only_rows']} prompt-only rows need candidates generated first; their calls are not counted")
        return
    counts = m["counts"]
    rate = m["first_position_rate"]
    click.echo(f"labeled {counts['labeled']} of {counts['pairs']} pairs -> {result.output_dir / 'pairs.jsonl'}")
    click.echo(
        f"consistent across orders: {counts['consistent']}, inconsistent: {counts['inconsistent']}; "
        f"skipped: {sum(counts['skipped'].values())}; failed: {sum(counts['failed'].values())}; "
        f"filtered: {sum(counts['filtered'].values())}"
    )
    if rate["raw"] is not None:
        click.echo(f"first-position rate: raw judgments {100 * rate['raw']:.1f}%, final labels {100 * rate['labels']:.1f}%")
    click.echo(
        f"judge calls: {m['judge_calls']['made']} made, {m['judge_calls']['cached']} from cache; "
        f"tokens: {m['tokens']['prompt']} in, {m['tokens']['completion']} out; {m['wall_time_s']:.1f}s"
        + (f"; estimated cost: {m['estimated_cost']:.4f}" if m["estimated_cost"] is not None else "")
    )


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def agreement(run_dir: str, as_json: bool) -> None:
    """Agreement of a run's AI labels with human labels, and the judge's biases."""
    from rlaif.agreement import agreement as compute
    from rlaif.agreement import format_report

    report = compute(run_dir)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@main.command()
@click.option("--method", type=click.Choice(["sft", "rm", "dpo", "ppo"]), default=None, help="What to train (required here or in --config).")
@click.option("--data", default=None, help="Training data: anything `rlaif label` reads or writes.")
@click.option("--model", default=None, help="Model name or directory [default: the embedded SmolLM2-135M-Instruct].")
@click.option("--output", default=None, help="Output directory [default: outputs/<method>].")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None, help="TOML/YAML file with any of these settings; the command line wins.")
@click.option("--max-steps", type=int, default=None)
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True, help="Per process (rollout prompts for PPO: --rollout-batch-size).")
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--lr", type=float, default=1e-5, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="AdamW's decoupled weight decay.")
@click.option("--warmup-steps", type=int, default=0, show_default=True, help="Linear warm-up of the learning rate.")
@click.option("--lr-scheduler", type=click.Choice(["linear", "constant"]), default="linear", show_default=True, help="After warm-up: linear decay to 0, or constant.")
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--truncate-prompt", is_flag=True, help="Keep the end of prompts longer than --max-length instead of stopping.")
@click.option("--limit", type=int, default=None, help="Read at most this many rows of --data.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-data", default=None, help="Held-out data.")
@click.option("--eval-split", type=float, default=0.0, show_default=True, help="Hold out this share of --data (without --eval-data).")
@click.option("--eval-fold", type=int, default=0, show_default=True, help="Which --eval-split slice to hold out (0, 1, …: cross-validation folds).")
@click.option("--eval-steps", type=int, default=0, show_default=True, help="Also evaluate on the held-out data every N steps (0: at the end only).")
@click.option("--save-steps", type=int, default=0, show_default=True, help="Checkpoint every N steps (0: at the end only).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --output.")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (CUDA).")
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--train-layers", type=int, default=None, help="Train only the top N transformer blocks and the head (0: the head alone; rm: the frozen backbone runs once per sequence).")
@click.option("--hard-labels", is_flag=True, help="rm/dpo: ignore ai_preference, use hard labels.")
@click.option("--beta", type=float, default=0.1, show_default=True, help="dpo: KL strength.")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True, help="dpo: conservative DPO's label noise rate.")
@click.option("--loss", type=click.Choice(["sigmoid", "ipo"]), default="sigmoid", show_default=True, help="dpo: loss form.")
@click.option("--reward-model", default=None, help="ppo: a reward model trained with --method rm.")
@click.option("--rollout-batch-size", type=int, default=8, show_default=True, help="ppo: prompts per rollout.")
@click.option("--ppo-epochs", type=int, default=4, show_default=True)
@click.option("--mini-batch-size", type=int, default=4, show_default=True)
@click.option("--max-new-tokens", type=int, default=48, show_default=True, help="ppo: response length.")
@click.option("--kl-coef", type=float, default=0.05, show_default=True, help="ppo: per-token KL penalty β.")
@click.option("--missing-eos-penalty", type=float, default=None, help="ppo: subtracted from the score of a response with no end-of-sequence.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx: click.Context, config_file: str | None, quiet: bool, **options) -> None:
    """Train with --method sft|rm|dpo|ppo on preference data."""
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
@click.argument("name_or_path")
@click.option("--cot", is_flag=True, help="Show the chain-of-thought form.")
def rubric(name_or_path: str, cot: bool) -> None:
    """Show what a rubric renders to on a sample pair (checks a custom template)."""
    from rlaif.rubric import SAMPLE, load_rubric

    r = load_rubric(name_or_path)
    click.echo(f"# {r.path}  labels={list(r.labels)}  verdict_prefix={r.verdict_prefix!r}  sha256={r.sha256[:12]}", err=True)
    sys.stdout.write(r.render(SAMPLE["prompt"], SAMPLE["response_a"], SAMPLE["response_b"], cot))


if __name__ == "__main__":
    main()
