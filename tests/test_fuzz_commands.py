"""Every command, fuzzed through the command line: each path option given hostile paths (a file
where a directory is wanted and the reverse, a path under a regular file, a place that cannot be
written, names with odd characters), each number and choice option out-of-range or wrongly typed
values. Each run ends with status 0, or with status 1 or 2 and one line: never a traceback, and
nothing already on disk is lost. Fixed seed (derandomized), within a minute or two."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlaif.cli import main

FUZZ = settings(derandomize=True, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ROOT = Path(__file__).resolve().parent.parent
KEEP = "written before: keep me"
NO_MODEL = "./no-such-model"  # every run that gets past the option under test stops here, before any model loads

# command: (the arguments that make it a run that fails fast or writes little, its path options, its other options)
COMMANDS = {
    "label": (["--input", "examples/demo.jsonl", "--dry-run"], ["--input", "--output", "--judge", "--rubric", "--cache"],
              ["--limit", "--concurrency", "--num-responses", "--max-calls-per-prompt", "--min-confidence", "--temperature", "--pairs",
               "--ranking", "--mode", "--debias", "--chunk-size"]),
    "train": (["--method", "dpo", "--data", "examples/demo.jsonl", "--model", NO_MODEL], ["--data", "--output", "--config", "--eval-data",
              "--reference-cache"], ["--batch-size", "--lr", "--epochs", "--max-length", "--beta", "--method", "--loss", "--eval-split"]),
    "compare": (["--eval-data", "examples/demo.jsonl", "--output", "outputs/fuzz-compare", NO_MODEL],
                ["--eval-data", "--output", "--gold-rm", "--labels"],
                ["--limit", "--max-new-tokens", "--temperature", "--samples", "--mode"]),
    "agreement": ([], ["RUN_DIR"], []),
    "calibrate": ([], ["RUN_DIR"], ["--folds"]),
    "rate": ([], ["JUDGMENTS"], ["--bootstrap", "--k"]),
    "rubric": ([], ["NAME_OR_PATH"], ["--mode"]),
    "experiment": ([], ["CONFIG_FILE"], []),
    "serve": (["--judge", "./no-such-judge.toml"], ["--judge", "--rubric", "--cache"],
              ["--port", "--max-batch", "--max-wait-ms", "--ranking"]),
}
BAD_VALUES = ["-1", "0", "abc", "1e309", "nan", "99999999999999999999", "", "--", "0.5x"]


def hostile_paths(tmp: Path) -> dict[str, str]:
    """Paths that no command should take, or should take only carefully, set up under `tmp`."""
    (tmp / "a-file").write_text(KEEP)
    (tmp / "a-dir").mkdir(exist_ok=True)
    (tmp / "a-dir" / "kept.txt").write_text(KEEP)
    (tmp / "empty.jsonl").write_text("")
    (tmp / "binary.bin").write_bytes(bytes(range(256)) * 4)
    return {
        "a file": str(tmp / "a-file"),
        "a directory": str(tmp / "a-dir"),
        "under a file": str(tmp / "a-file" / "below"),
        "missing": str(tmp / "missing" / "deeper"),
        "unwritable": "/proc/rlaif-fuzz/out",
        "odd characters": str(tmp / "odd\nname ünï \t"),
        "leading dash": "-x",
        "empty file": str(tmp / "empty.jsonl"),
        "binary": str(tmp / "binary.bin"),
        "nothing": "",
    }


def args_for(command: str, option: str, value: str) -> list[str]:
    base, _, _ = COMMANDS[command]
    if option.isupper():  # a positional argument
        return [command, *base, "--", value]
    kept = [a for i, a in enumerate(base) if a != option and (i == 0 or base[i - 1] != option)]
    return [command, option, value, *kept]


def check(args: list[str], tmp: Path) -> int:
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    assert "Traceback" not in result.output, (args, result.output)
    if result.exit_code == 1:
        assert result.output.count("\n") >= 1 and "Error: " in result.output, (args, result.output)
        assert "unexpected" not in result.output, (args, result.output)  # a bug, caught by the command line's last resort
    assert (tmp / "a-file").read_text() == KEEP and (tmp / "a-dir" / "kept.txt").read_text() == KEEP, args
    assert (tmp / "empty.jsonl").read_bytes() == b"", args  # a dry run's cache lookup changed no file
    assert not (ROOT / ".rlaif.lock").exists(), args  # an empty path is no output directory: nothing is written into the working directory
    return result.exit_code


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Iterator[Path]:
    """A scratch folder, the repository as the working directory, and a cache of its own (restored after)."""
    path = tmp_path_factory.mktemp("fuzz")
    os.chdir(ROOT)
    before = os.environ.get("RLAIF_CACHE")
    os.environ["RLAIF_CACHE"] = str(path / "cache")
    yield path
    if before is None:
        os.environ.pop("RLAIF_CACHE")
    else:
        os.environ["RLAIF_CACHE"] = before


@FUZZ
@given(data=st.data())
def test_every_path_option_of_every_command_takes_hostile_paths(tmp, data):
    paths = hostile_paths(tmp)
    command = data.draw(st.sampled_from(sorted(COMMANDS)))
    option = data.draw(st.sampled_from(COMMANDS[command][1]))
    check(args_for(command, option, data.draw(st.sampled_from(sorted(paths.values())))), tmp)


@FUZZ
@given(data=st.data())
def test_every_number_and_choice_option_takes_bad_values(tmp, data):
    hostile_paths(tmp)
    command = data.draw(st.sampled_from([c for c in sorted(COMMANDS) if COMMANDS[c][2]]))
    option = data.draw(st.sampled_from(COMMANDS[command][2]))
    value = data.draw(st.sampled_from(BAD_VALUES))
    code = check(args_for(command, option, value), tmp)
    assert value not in ("nan", "1e309") or code != 0, (command, option, value)  # a number that is not finite is never a setting
