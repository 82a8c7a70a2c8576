"""Settings as dataclass fields: each carries its help text and allowed values, so a command's
options, a settings file and the Python API share one declaration and one check."""

from __future__ import annotations

import difflib
import math
import re
import sys
import tomllib
from dataclasses import Field, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from rlaif.errors import ConfigError


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None, flag: str | None = None, at_least: float | None = None,
            above: float | None = None, at_most: float | None = None, below: float | None = None, methods: tuple[str, ...] | None = None,
            aliases: tuple[str, ...] = ()) -> Any:
    """A config field with the help text (and allowed values: `choices`, or bounds) its command
    shows for it; `flag` names its option where the idea has one name across commands (or the
    field's own name reads badly on a command line), and `aliases` are older names it still takes;
    `methods`, the only ones it applies to (its help says so). A list default is copied for each
    config (a list field is an option given any number of times). None is always allowed where
    the field's type allows it."""
    metadata = {"help": help, "choices": choices, "flag": flag,
                "bounds": (at_least, above, at_most, below), "methods": methods, "aliases": aliases}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def setting_help(f: Field) -> str:
    """A field's help as its option shows it: prefixed by the methods it applies to, if not all."""
    methods = f.metadata.get("methods")
    return f"{', '.join(methods)}: {f.metadata['help']}" if methods else f.metadata["help"]


def option_flag(f: Field) -> str:
    """The command-line option of a config field: `--field-name`, or its own `flag`."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def required(help: str, choices: tuple[str, ...] | None = None, argument: bool = False, flag: str | None = None,
             aliases: tuple[str, ...] = ()) -> Any:
    """A config field without a default; `argument`: the command takes it as its positional
    arguments; `flag` and `aliases` as for `setting`."""
    return field(metadata={"help": help, "choices": choices, "argument": argument, "flag": flag, "aliases": aliases})


def option_names(f: Field) -> list[str]:
    """Every name a settings file may give a field by: its own, its option's and its aliases' (`max_steps`, `max-steps`)."""
    flags = [option_flag(f), *f.metadata.get("aliases", ())]
    return [f.name, *{name[2:].replace("-", "_") for name in flags}]


def allowed_types(hint: Any) -> tuple[Any, ...]:
    """The types an annotation allows: `int | None` -> (int, NoneType); `list[str]` -> (list[str],)."""
    return get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)


def choice_problem(value: Any, allowed: tuple[str, ...]) -> str | None:
    return None if value in allowed else f"expected one of {', '.join(allowed)}, got {value!r}"


def type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit the annotation `hint` (an int is a fine float), or None."""
    options = allowed_types(hint)
    if value is None:
        fits = type(None) in options
    elif isinstance(value, bool):
        fits = bool in options
    elif isinstance(value, int) and float in options:
        fits = True
    else:
        fits = isinstance(value, tuple(getattr(o, "__origin__", o) for o in options if o is not type(None)))
    names = " or ".join("null" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    return None if fits else f"expected {names}, got {value!r}"


def bounds_problem(value: float, bounds: tuple[float | None, ...]) -> str | None:
    """Why a number is out of its bounds (at least, above, at most, below), or None."""
    at_least, above, at_most, below = bounds
    for limit, fails, words in ((at_least, lambda v, x: v < x, "at least"), (above, lambda v, x: v <= x, "more than"),
                                (at_most, lambda v, x: v > x, "at most"), (below, lambda v, x: v >= x, "less than")):
        if limit is not None and fails(value, limit):
            return f"must be {words} {limit}, got {value}"
    return None


def check_settings(config: Any) -> None:
    """Raise ConfigError, naming the key, for a field whose value is outside its choices or bounds.
    Every config calls it on construction, so the command line, settings files and the Python API
    refuse the same values with the same message."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if value is None and type(None) in allowed_types(hints[f.name]):
            continue
        problem = None
        if isinstance(value, float) and not math.isfinite(value):
            problem = f"must be a finite number, got {value}"
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.maxsize:
            problem = f"must be at most {sys.maxsize} either way, got {value}"
        elif allowed := f.metadata.get("choices"):
            problem = choice_problem(value, allowed)
        elif any(b is not None for b in f.metadata.get("bounds", ())) and isinstance(value, int | float):
            problem = bounds_problem(value, f.metadata["bounds"])
        elif isinstance(value, str) and not value.strip():  # a path, a name: "" would mean the current directory, or nothing
            problem = "is empty: give a value, or leave it out for its default"
        if problem is not None:
            raise ConfigError(problem, key=f.name)


def unknown_key(name: str, known: list[str]) -> str:
    """"unknown key", with the nearest known one where one is near."""
    near = difflib.get_close_matches(name, known, n=1)
    return f"unknown key; did you mean {near[0]!r}?" if near else "unknown key"


def _yaml_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _line_of(text: str, *keys: str) -> int:
    """The first line that sets one of `keys` in a TOML/YAML file, `-` and `_` alike (0 if none does)."""
    names = "|".join(re.escape(key).replace("_", "[-_]").replace("\\-", "[-_]") for key in keys)
    pattern = re.compile(rf"\s*['\"]?(?:{names})['\"]?\s*[=:]")
    return next((i for i, line in enumerate(text.splitlines(), 1) if pattern.match(line)), 0)


def line_in_file(path: str | Path, config_class: type, name: str) -> int:
    """The line of a settings file that sets field `name` of `config_class`, by any of its names (0 if none does)."""
    f = next((f for f in fields(config_class) if f.name == name), None)
    return _line_of(read_text(path), *(option_names(f) if f else [name]))


def read_text(path: str | Path) -> str:
    """A settings file's text; one that is not UTF-8 is a ConfigError naming it and its line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as Windows tools write, is no error
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {raw[e.start]:#04x}); save the file as UTF-8", str(path),
                          raw[:e.start].count(b"\n") + 1) from None


def read_settings_file(path: str | Path, config_class: type) -> dict[str, Any]:
    """Settings of `config_class` from a TOML or YAML file: its fields that have help text, the
    ones a user gives (not one the program sets, such as `progress`); an unknown key or a bad
    value is an error naming file, line and key."""
    path = Path(path)
    text = read_text(path)
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(str(e), str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"expected a table of settings, got {type(data).__name__}", str(path))
    given = [f for f in fields(config_class) if "help" in f.metadata]
    hints = {name: hint for name, hint in get_type_hints(config_class).items() if name in {f.name for f in given}}
    choices = {f.name: f.metadata["choices"] for f in given if f.metadata.get("choices")}
    field_of = {name: f.name for f in given for name in option_names(f)}
    settings = {}
    for key, value in data.items():
        name = field_of.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in hints:
            problem = unknown_key(name, [f.name for f in given])
        elif name in choices and value is not None:
            problem = choice_problem(value, choices[name])
        else:
            if isinstance(value, str) and float in allowed_types(hints[name]):
                value = _yaml_float(value)  # PyYAML reads `1e-5` (no dot) as a string
            problem = type_problem(value, hints[name])
        if problem is not None:
            raise ConfigError(problem, str(path), _line_of(text, key), key)
        settings[name] = value
    return settings
