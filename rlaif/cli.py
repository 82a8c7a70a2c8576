"""The `rlaif` command: a thin layer over the Python API. Each command's options are generated
from the fields of its config dataclass; each run formats its own summary."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import get_args, get_origin, get_type_hints

import click

from rlaif.errors import ConfigError, UserError
from rlaif.evaluate.compare import CompareConfig
from rlaif.judging.base import MODES
from rlaif.labeling.revise import ReviseConfig
from rlaif.labeling.run import LabelConfig
from rlaif.serving.server import ServeConfig
from rlaif.settings import allowed_types, line_in_file, option_flag, read_settings_file, setting_help
from rlaif.trainers.config import TrainConfig
from rlaif.trainers.methods import NAMES, ONLINE
from rlaif.workflows.iterate import IterateConfig


def config_options(config_class: type):
    """One option per field of `config_class` that has help text, with the field's default and
    choices: a command's options come from its config, never written twice. A list field is an
    option given any number of times; an `argument` field, the command's arguments. And
    `--config FILE`: any of them from a TOML/YAML file, the command line winning; so a required
    field may come from either, and is checked once both are read."""
    hints = get_type_hints(config_class)

    def decorate(command):
        command = settings_file(config_class)(command)
        for f in reversed(fields(config_class)):
            if "help" not in f.metadata:
                continue
            default = None if f.default is MISSING else f.default
            hint = next(t for t in allowed_types(hints[f.name]) if t is not type(None))
            is_list = get_origin(hint) is list
            kind = get_args(hint)[0] if is_list else hint
            if f.metadata.get("argument"):
                command = click.argument(f.name, nargs=-1 if is_list else 1, required=False)(command)
                continue
            flag = option_flag(f)
            if kind is bool:
                # both forms, so that a flag a --config file sets can be turned off on the command line
                option = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=default, is_flag=True, help=setting_help(f))
            else:
                choices = f.metadata.get("choices")
                option = click.option(flag, *f.metadata.get("aliases", ()), f.name, type=click.Choice(choices) if choices else kind,
                                      default=None if is_list else default, multiple=is_list,
                                      show_default=default is not None and not is_list, help=setting_help(f))
            command = option(command)
        return command

    return decorate


def settings_file(config_class: type):
    """Wrap a command so that `--config FILE` gives any of `config_class`'s settings, the command
    line winning; a required setting that neither gives is a usage error, and a bad value the
    file gave is named by the file's line and key."""
    required = [f for f in fields(config_class) if f.default is MISSING and f.default_factory is MISSING and "help" in f.metadata]

    def decorate(command):
        @functools.wraps(command)
        def run(*args, config_file: str | None = None, **options):
            ctx = click.get_current_context()
            from_file = read_settings_file(config_file, config_class) if config_file else {}
            given = {name for name in options if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
            settings = {**options, **{name: value for name, value in from_file.items() if name not in given}}
            for f in required:
                if not settings.get(f.name):
                    what = f.name.upper() if f.metadata.get("argument") else option_flag(f)
                    raise click.UsageError(f"{what} is required (on the command line or in --config)")
            try:
                return command(*args, **settings)
            except ConfigError as e:
                if e.key in from_file and e.key not in given and not e.file:
                    raise ConfigError(e.message, config_file, line_in_file(config_file, config_class, e.key), e.key) from None
                raise

        return click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
                            help="TOML/YAML file with any of these settings; the command line wins.")(run)

    return decorate


class Group(click.Group):
    """The one place where a command's failure becomes what the user reads: their mistakes (bad
    input, templates, configs), a file the system refuses and an interruption as one clear line,
    exit status 1; anything else (a bug) as one line naming where it happened and the file that
    holds its whole traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ConfigError as e:
            raise click.ClickException(as_typed(e, ctx)) from None
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted: what was written is kept; run the same command again to go on") from None
        except OSError as e:
            raise click.ClickException(f"{e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - a bug: said in one line, its traceback kept in a file
            raise click.ClickException(crash_report(e, ctx)) from None


def as_typed(e: ConfigError, ctx: click.Context) -> str:
    """A setting's error named by the option the user typed (`--min-confidence`), not the config
    key it fills (`min_confidence`); one from a settings file keeps its file, line and key."""
    command = (ctx.command.get_command(ctx, ctx.invoked_subcommand)
               if isinstance(ctx.command, click.Group) and ctx.invoked_subcommand else None)
    option = next((p for p in (command.params if command else []) if p.name == e.key and isinstance(p, click.Option)), None)
    if e.file or option is None:
        return str(e)
    return f"{option.opts[0]}: {e.message}"


def show_progress(quiet: bool) -> bool:
    """Progress bars: on a terminal, unless --quiet; in a log or a pipe only when RLAIF_PROGRESS=1 asks for them."""
    return not quiet and (sys.stderr.isatty() or os.environ.get("RLAIF_PROGRESS") == "1")


def crash_report(e: Exception, ctx: click.Context) -> str:
    """Write an unexpected exception's traceback to a file; the line that names it and where it happened."""
    import time
    import traceback

    from rlaif.models.loading import cache_dir

    frame = traceback.extract_tb(e.__traceback__)[-1]
    path = cache_dir() / "crashes" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"rlaif {ctx.invoked_subcommand}: {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(e)))
    where = f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"
    return (f"unexpected {type(e).__name__} in {where}: {str(e).splitlines()[0][:300] if str(e) else ''} "
            f"(a bug; the whole traceback is in {path})")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rlaif", prog_name="rlaif")
def main() -> None:
    """Turn AI feedback into preference data, and train on it."""


@main.command()
@config_options(LabelConfig)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def label(quiet: bool, **options) -> None:
    """Label response pairs with an AI judge."""
    from rlaif.labeling.run import label as run_label

    try:
        result = run_label(LabelConfig(progress=show_progress(quiet), **options))
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: every answer received so far is in the cache; "
                                   "run the same command again to resume") from None
    click.echo(result.summary())
    if result.manifest and result.manifest["counts"]["labeled"] == 0:
        c = result.manifest["counts"]
        unseparated = (result.manifest["ranking"] or {}).get("unseparated", 0)
        raise click.ClickException(f"labeled nothing: {c['pairs']} pairs, {sum(c['failed'].values())} failed, "
                                   f"{sum(c['filtered'].values())} filtered out, {unseparated} not separated by the judge "
                                   f"(failures: {result.output_dir / 'failures.jsonl'})")


@main.command("gguf-path")
def gguf_path() -> None:
    """Print the path of the embedded model's GGUF file (to serve it with llama.cpp's server)."""
    from rlaif.models.loading import embedded_gguf_path

    click.echo(embedded_gguf_path())


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def agreement(run_dir: str, as_json: bool) -> None:
    """Agreement of a run's AI labels with human labels, and the judge's biases."""
    from rlaif.evaluate.agreement import agreement as compute
    from rlaif.labeling.quality import format_report

    report = compute(run_dir)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--folds", type=click.IntRange(2), default=5, show_default=True,
              help="Cross-validation folds for the calibration error after fitting.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the folds.")
@click.option("--output", default=None, help="The calibrated judge config to write [default: RUN_DIR/calibrated-judge.yaml].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def calibrate(run_dir: str, folds: int, seed: int, output: str | None, as_json: bool) -> None:
    """Fit the judge's temperature on a run's human-labeled pairs; write a calibrated judge config."""
    from rlaif.labeling.calibration import calibrate as fit
    from rlaif.labeling.calibration import format_calibration

    report = fit(run_dir, folds, seed, output)
    click.echo(json.dumps(report, indent=2) if as_json else format_calibration(report))


OFFLINE = tuple(name for name in NAMES if name not in ONLINE)


@main.command(help=f"Train with --method {'|'.join(OFFLINE)} on preference data, or {'|'.join(ONLINE)} on prompts.")
@config_options(TrainConfig)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(quiet: bool, **options) -> None:
    from rlaif.trainers import train as run_train

    config = TrainConfig(progress=show_progress(quiet), **options)
    results = run_train(config)
    click.echo(f"saved to {config.output}")
    for name, value in results.items():
        click.echo(f"{name}: {value:.4f}")


@main.command()
@config_options(CompareConfig)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compare(quiet: bool, **options) -> None:
    """Compare trained policies with their base: win rates, gold reward, KL, reference metrics."""
    from rlaif.evaluate.compare import compare as run_compare

    config = CompareConfig(progress=show_progress(quiet), **options)
    run_compare(config)
    click.echo((Path(config.output) / "report.md").read_text())


@main.command()
@config_options(IterateConfig)
@click.option("--train-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TOML/YAML with `rlaif train` settings for each round's policy training (lr, max_steps, beta, ...).")
@click.option("--rm-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="--method ppo: settings of each round's reward-model training.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def iterate(train_config: str | None, rm_config: str | None, quiet: bool, **options) -> None:
    """Online RLAIF: the policy samples, the judge labels, DPO (or RM + PPO) trains, for --rounds;
    then every round's policy is compared with the start."""
    from rlaif.trainers import read_config_file
    from rlaif.workflows.iterate import iterate as run_iterate

    config = IterateConfig(train=read_config_file(train_config) if train_config else {},
                           rm_train=read_config_file(rm_config) if rm_config else {},
                           progress=show_progress(quiet), **options)
    run_iterate(config)
    click.echo((Path(config.output) / "rounds.md").read_text())


@main.command()
@config_options(ReviseConfig)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def revise(quiet: bool, **options) -> None:
    """Critique each response against principles and rewrite it (Constitutional AI): (revised,
    original) preference pairs for `rlaif train`."""
    from rlaif.labeling.revise import revise as run_revise
    from rlaif.labeling.revise import summary

    config = ReviseConfig(progress=show_progress(quiet), **options)
    click.echo(summary(run_revise(config), config.output_dir()))


@main.command()
@click.argument("judgments", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Resamples of the prompts for the 95% intervals.")
@click.option("--k", type=float, default=32.0, show_default=True, help="Elo's K: how far one game moves a rating.")
@click.option("--l2", type=float, default=0.01, show_default=True,
              help="Bradley–Terry's L2 penalty on θ (keeps a player who won every game finite).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", default=None, help="Also write the ratings to this JSON file.")
@click.option("--json", "as_json", is_flag=True, help="Print the ratings as JSON.")
def rate(judgments: tuple[str, ...], bootstrap: int, k: float, l2: float, seed: int, output: str | None, as_json: bool) -> None:
    """Elo and Bradley–Terry ratings, with bootstrap intervals, from pairwise judgments: `rlaif
    compare` output directories or judgments.jsonl files, or battles (model_a, model_b, winner)."""
    from rlaif.evaluate.ratings import format_ratings, ratings, read_games
    from rlaif.storage.files import write_json_atomic

    result = ratings(read_games(judgments), bootstrap, k, l2, seed)
    if output:
        write_json_atomic(Path(output), result)
    click.echo(json.dumps(result, indent=2) if as_json else format_ratings(result))


@main.command()
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--quiet", is_flag=True, help="No progress bars.")
def experiment(config_file: str, quiet: bool) -> None:
    """Run an AI-vs-human experiment file: label, agreement, DPO on each, gold RM, compare."""
    from rlaif.workflows.experiment import experiment_output, run_experiment

    run_experiment(config_file, progress=show_progress(quiet))
    click.echo((experiment_output(config_file) / "report.md").read_text())


@main.command()
@config_options(ServeConfig)
def serve(**options) -> None:
    """Serve the judge as an HTTP reward: OpenRLHF's /get_reward, /v1/scores and /v1/group_rewards (TRL through rlaif.serving.client)."""
    from rlaif.serving.server import serve as run_server

    run_server(ServeConfig(**options))


@main.command()
@click.argument("name_or_path")
@click.option("--cot", is_flag=True, help="Show the chain-of-thought form.")
@click.option("--mode", type=click.Choice(MODES), default="pairwise", show_default=True, help="Show the pairwise or the pointwise form.")
def rubric(name_or_path: str, cot: bool, mode: str) -> None:
    """Show what a rubric renders to on a sample pair, with a sample reference answer (checks a custom template)."""
    from rlaif.judging.rubric import SAMPLE, load_rubric

    r = load_rubric(name_or_path)
    if mode == "pointwise":
        click.echo(f"# {r.path}  scale={list(r.scale or [])}  rating_prefix={r.rating_prefix!r}  sha256={r.sha256[:12]}", err=True)
        sys.stdout.write(r.render_rating(SAMPLE["prompt"], SAMPLE["response_a"], cot, SAMPLE["reference"]))
        return
    click.echo(f"# {r.path}  labels={list(r.labels)}  verdict_prefix={r.verdict_prefix!r}  sha256={r.sha256[:12]}"
               f"{'  needs a reference' if r.needs_reference else ''}", err=True)
    sys.stdout.write(r.render(SAMPLE["prompt"], SAMPLE["response_a"], SAMPLE["response_b"], cot, SAMPLE["reference"]))


if __name__ == "__main__":
    main()
