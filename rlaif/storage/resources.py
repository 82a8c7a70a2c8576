"""Where the built-in rubrics (`prompts/`) and judge configs (`judges/`) live.

In a source checkout or editable install they sit beside the package; a wheel carries
them inside it as `rlaif/_builtin/`.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # the rlaif package


def builtin_or_path(name_or_path: str | Path, kind: str, suffixes: tuple[str, ...],
                    hidden: tuple[str, ...] = ()) -> tuple[Path | None, list[str]]:
    """A plug-in file (a rubric, a judge config): a path that exists as given (with a suffix), else
    the built-in of that name in the `kind` folder, with any of `suffixes`. Returns (the file or
    None, the built-in names a message may list: all but those starting `_` and `hidden`)."""
    path = Path(name_or_path)
    if path.suffix and path.exists():
        return path.resolve(), []
    for suffix in suffixes:
        if (builtin := builtin_dir(kind) / f"{name_or_path}{suffix}").exists():
            return builtin, []
    known = sorted(p.stem for p in builtin_dir(kind).iterdir()
                   if p.suffix in suffixes and not p.stem.startswith("_") and p.stem not in hidden)
    return None, known


def builtin_dir(kind: str) -> Path:
    """The folder of built-in `prompts` or `judges`."""
    for candidate in (_PACKAGE / "_builtin" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"built-in {kind}/ folder not found beside {_PACKAGE}")
