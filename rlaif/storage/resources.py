"""Where the built-in rubrics (`prompts/`) and judge configs (`judges/`) live.

In a source checkout or editable install they sit beside the package; a wheel carries
them inside it as `rlaif/_builtin/`.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # the rlaif package


def builtin_dir(kind: str) -> Path:
    """The folder of built-in `prompts` or `judges`."""
    for candidate in (_PACKAGE / "_builtin" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"built-in {kind}/ folder not found beside {_PACKAGE}")
