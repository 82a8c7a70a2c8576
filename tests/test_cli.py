"""The command line and the config dataclasses agree: every option of `label`, `train`,
`compare`, `iterate` and `revise` is a field of its config, with the field's default, choices
and help."""

from dataclasses import MISSING, fields

import click
import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.evaluate.compare import CompareConfig
from rlaif.labeling.revise import ReviseConfig
from rlaif.labeling.run import LabelConfig
from rlaif.settings import setting_help
from rlaif.trainers.config import TrainConfig
from rlaif.workflows.iterate import IterateConfig

COMMANDS = {"label": LabelConfig, "train": TrainConfig, "compare": CompareConfig, "iterate": IterateConfig, "revise": ReviseConfig}
CLI_ONLY = {"quiet", "config_file", "train_config", "rm_config"}  # options that are not settings of a run (--config names a file of them)


@pytest.mark.parametrize("command", COMMANDS)
def test_options_are_the_config_fields(command):
    config = COMMANDS[command]
    params = {p.name: p for p in main.commands[command].params if p.name not in CLI_ONLY}
    documented = {f.name: f for f in fields(config) if "help" in f.metadata}
    assert set(params) == set(documented)
    for name, f in documented.items():
        param = params[name]
        if isinstance(param, click.Option):
            assert param.help == setting_help(f)
            if f.default is not MISSING and not param.multiple:
                assert param.default == f.default, name
            choices = f.metadata.get("choices")
            assert ((list(param.type.choices) if isinstance(param.type, click.Choice) else None)
                    == (list(choices) if choices else None)), name


def test_a_field_without_help_is_no_option():
    assert "progress" not in {p.name for p in main.commands["label"].params}
    assert {"train", "rm_train"}.isdisjoint(p.name for p in main.commands["iterate"].params)


def test_a_bad_choice_is_refused_alike_by_the_cli_and_the_api(tmp_path):
    from click.testing import CliRunner

    from rlaif.errors import ConfigError

    result = CliRunner().invoke(main, ["label", "--input", "x.jsonl", "--debias", "sometimes"])
    assert result.exit_code == 2 and "'sometimes' is not one of" in result.output
    with pytest.raises(ConfigError, match="key 'debias': expected one of both, random, none, got 'sometimes'"):
        LabelConfig(input="x.jsonl", debias="sometimes")


def test_compare_takes_runs_as_arguments_and_repeats_lists():
    ctx = main.make_context("rlaif", ["compare", "r1", "r2", "--eval-data", "e.jsonl", "--output", "o", "--rm", "a", "--rm", "b"])
    command = main.get_command(ctx, "compare")
    sub = command.make_context("compare", ["r1", "r2", "--eval-data", "e.jsonl", "--output", "o", "--rm", "a", "--rm", "b"], parent=ctx)
    config = CompareConfig(**{k: v for k, v in sub.params.items() if k not in CLI_ONLY})
    assert config.runs == ["r1", "r2"] and config.rms == ["a", "b"] and config.labels == []


def test_h_and_version_and_a_revise_template_is_no_rubric():
    from click.testing import CliRunner

    runner = CliRunner()
    assert runner.invoke(main, ["label", "-h"]).output == runner.invoke(main, ["label", "--help"]).output
    assert runner.invoke(main, ["--version"]).output.startswith("rlaif, version ")
    result = runner.invoke(main, ["rubric", "constitution"])
    assert result.exit_code == 1 and "principles template of `rlaif revise --constitution`, not a rubric" in result.output
    assert "constitution" not in runner.invoke(main, ["rubric", "no-such-rubric"]).output.split("built in:")[1]


def test_progress_bars_only_on_a_terminal_unless_asked(monkeypatch):
    import sys

    from rlaif.cli import show_progress

    monkeypatch.delenv("RLAIF_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not show_progress(False)
    monkeypatch.setenv("RLAIF_PROGRESS", "1")
    assert show_progress(False) and not show_progress(True)
    monkeypatch.delenv("RLAIF_PROGRESS")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(False) and not show_progress(True)


def test_a_setting_typed_as_an_option_is_named_by_that_option(tmp_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["label", "--input", "examples/demo.jsonl", "--min-confidence", "0.3", "--dry-run"])
    assert result.exit_code == 1 and result.output == "Error: --min-confidence: must be at least 0.5, got 0.3\n"
    settings = tmp_path / "train.toml"
    settings.write_text('method = "dpo"\ndata = "examples/demo.jsonl"\nlr = -1\n')
    result = CliRunner().invoke(main, ["train", "--config", str(settings)])
    # a file's setting keeps its file, line and key
    assert result.exit_code == 1 and f"{settings}:3: key 'lr': must be at least 0" in result.output
    settings.write_text('method = "dpo"\ninput = "examples/demo.jsonl"\nmax-steps = 0\n')  # an alias and the option's own spelling
    result = CliRunner().invoke(main, ["train", "--config", str(settings)])
    assert result.exit_code == 1 and f"{settings}:3: key 'max_steps': must be at least 1" in result.output
    settings.write_text('method = "grpo"\ninput = "examples/demo.jsonl"\ngroup_size = 1\n')  # an older name of --num-responses
    result = CliRunner().invoke(main, ["train", "--config", str(settings)])
    assert result.exit_code == 1 and f"{settings}:3: key 'group_size': must be at least 2" in result.output


@pytest.mark.parametrize("command", ["label", "train", "compare", "iterate", "revise", "serve"])
def test_every_run_command_takes_its_settings_from_a_config_file(command):
    assert "config_file" in {p.name for p in main.commands[command].params}


def test_a_config_file_gives_settings_the_command_line_overrides(tmp_path):
    settings = tmp_path / "label.yaml"
    settings.write_text(f"input: examples/demo.jsonl\nlimit: 2\npairs: all\noutput: {tmp_path / 'out'}\n")
    run = CliRunner().invoke(main, ["label", "--config", str(settings), "--dry-run"])
    assert run.exit_code == 0 and "6 pairs: 12 judge calls to make" in run.output, run.output  # two rows of three candidates, every pair
    run = CliRunner().invoke(main, ["label", "--config", str(settings), "--limit", "1", "--pairs", "best-worst", "--dry-run"])
    assert run.exit_code == 0 and "1 rows with more than two candidates" in run.output, run.output  # the command line wins: one row, ranked
    settings.write_text("limit: 2\n")
    run = CliRunner().invoke(main, ["label", "--config", str(settings), "--dry-run"])
    assert run.exit_code == 2 and "--input is required (on the command line or in --config)" in run.output
    settings.write_text("input: examples/demo.jsonl\nlimit: 2\nmin_confidence: 0.3\n")
    run = CliRunner().invoke(main, ["label", "--config", str(settings), "--dry-run"])
    assert run.exit_code == 1 and f"{settings}:3: key 'min_confidence': must be at least 0.5, got 0.3" in run.output
    run = CliRunner().invoke(main, ["label", "--config", str(settings), "--min-confidence", "0.4", "--dry-run"])
    assert run.exit_code == 1 and run.output == "Error: --min-confidence: must be at least 0.5, got 0.4\n"  # named as typed
    settings.write_text(f"input: examples/demo.jsonl\nlimit: 1\noutput: {tmp_path / 'out'}\ndry_run: true\n")
    run = CliRunner().invoke(main, ["label", "--config", str(settings)])
    assert run.exit_code == 0 and "judge calls to make" in run.output and not (tmp_path / "out").exists()
    run = CliRunner().invoke(main, ["label", "--config", str(settings), "--no-dry-run", "--quiet"])  # a flag the file sets, turned off
    assert (tmp_path / "out" / "manifest.json").exists(), run.output
    settings.write_text("input: examples/demo.jsonl\nprogress: false\n")  # a field the command sets itself
    run = CliRunner().invoke(main, ["label", "--config", str(settings), "--dry-run"])
    assert run.exit_code == 1 and f"{settings}:2: key 'progress': unknown key" in run.output
    settings.write_text("runs: []\neval_data: examples/demo.jsonl\n")
    run = CliRunner().invoke(main, ["compare", "--config", str(settings)])
    assert run.exit_code == 2 and "RUNS is required" in run.output


def test_input_dash_reads_standard_input(tmp_path):
    rows = "".join(f'{{"prompt": "Is {i} a number?", "chosen": "Yes.", "rejected": "No, never."}}\n' for i in range(2))
    run = CliRunner().invoke(main, ["label", "--input", "-", "--dry-run"], input=rows)
    assert run.exit_code == 0, run.output
    assert "2 pairs: 4 judge calls to make" in run.output
    run = CliRunner().invoke(main, ["label", "--input", "-", "--dry-run"], input='{"prompt": 3}\n')
    assert run.exit_code == 1 and "<stdin>:1: field 'prompt'" in run.output
