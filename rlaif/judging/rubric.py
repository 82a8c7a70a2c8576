"""Rubrics: Jinja2 templates in `prompts/` rendered in a sandbox into a judge's prompt.

A template sees `prompt` (the query as text), `messages` (the query as chat messages),
`mode` ("pairwise" or "pointwise"), `cot` (ask for a rationale first), `reference` (the row's
reference answer, or None; a template that sets `requires_reference` needs one) and the response(s):
pairwise, `response_a` and `response_b` (shown first and second); pointwise, `response`
(rated alone). A template that never reads `response` has no pointwise form.
It may set `labels` (the two verdict strings, default "1" and "2"), `verdict_prefix`
(the text that precedes the verdict, default "Preferred Response="), and for its pointwise
form `scale` (the ratings, numbers from worst to best, default "1" to "5") and
`rating_prefix` (default "Rating=").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rlaif.errors import UserError
from rlaif.inputs import Prompt, prompt_text
from rlaif.storage.resources import builtin_dir, builtin_or_path

# How a verdict is written unless a rubric says otherwise: the judge request's defaults, and the
# values every template sees (`labels`, `verdict_prefix`, `scale`, `rating_prefix`) until it sets its own.
DEFAULT_RUBRIC = "quality"  # the rubric of a run that names none and whose judge config names none
DEFAULT_LABELS = ("1", "2")
DEFAULT_VERDICT_PREFIX = "Preferred Response="
DEFAULT_SCALE = ("1", "2", "3", "4", "5")
DEFAULT_RATING_PREFIX = "Rating="
SAMPLE = {
    "prompt": "What is the boiling point of water at sea level?",
    "response_a": "100 degrees Celsius.",
    "response_b": "About 90 degrees Celsius.",
    "reference": "Water boils at 100 °C (212 °F) at sea level.",
}


class RubricError(UserError):
    """A template that cannot be loaded or rendered, located by file and line."""

    def __init__(self, file: str, line: int | None, message: str):
        self.file, self.line = file, line
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


PRINCIPLES = ("constitution",)  # built-in templates in prompts/ that are `rlaif revise`'s principles, not rubrics


def resolve_rubric_path(name_or_path: str | Path) -> Path:
    """A rubric file: a path as given, else a built-in name in `prompts/` (`quality`)."""
    path, known = builtin_or_path(name_or_path, "prompts", (".j2",), hidden=PRINCIPLES)
    if path is not None:
        return path
    raise RubricError(str(name_or_path), None, f"no such rubric file or built-in name (built in: {', '.join(known)})")


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The template line an exception was raised from (Jinja rewrites tracebacks to templates)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@dataclass
class Rubric:
    """A loaded, checked rubric template."""

    name: str
    path: Path
    sha256: str
    labels: tuple[str, str]
    verdict_prefix: str
    scale: tuple[str, ...] | None  # None: the template has no pointwise form
    rating_prefix: str
    _template: jinja2.Template
    needs_reference: bool = False  # the template sets `requires_reference`: every row must carry a `reference`

    def render(self, prompt: Prompt, response_a: str, response_b: str, cot: bool = False, reference: str | None = None) -> str:
        """The pairwise prompt: which of the two responses is better."""
        return self._render(prompt, cot, reference, mode="pairwise", response_a=response_a, response_b=response_b)

    def render_rating(self, prompt: Prompt, response: str, cot: bool = False, reference: str | None = None) -> str:
        """The pointwise prompt: how good one response is, on `scale`."""
        if self.scale is None:
            raise RubricError(str(self.path), None, "has no pointwise form (it never uses `response`): see prompts/README.md")
        return self._render(prompt, cot, reference, mode="pointwise", response=response)

    def _render(self, prompt: Prompt, cot: bool, reference: str | None, **context: str) -> str:
        if self.needs_reference and reference is None:
            raise RubricError(str(self.path), None, "grades against a reference answer: every row needs a `reference` field")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return render_template(self._template, self.path, prompt=prompt_text(prompt), messages=messages, cot=cot,
                               reference=reference, **context)


def load_template(path: Path) -> tuple[jinja2.Environment, jinja2.Template, list[str], str]:
    """A template file in the sandbox (its own folder first, then the built-ins, so a user's
    template can extend ours): its environment, the template, its sources (its own and those
    it extends or includes) and their sha256."""
    loader = jinja2.FileSystemLoader([str(path.parent), str(builtin_dir("prompts"))])
    env = ImmutableSandboxedEnvironment(
        loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    env.globals.update(labels=list(DEFAULT_LABELS), verdict_prefix=DEFAULT_VERDICT_PREFIX, scale=list(DEFAULT_SCALE),
                       rating_prefix=DEFAULT_RATING_PREFIX)
    try:
        template = env.get_template(path.name)
        sources = _sources(env, path.name)
    except jinja2.TemplateSyntaxError as e:
        raise RubricError(e.filename or str(path), e.lineno, e.message or str(e)) from None
    except jinja2.TemplateNotFound as e:
        raise RubricError(str(path), None, f"includes or extends a missing template: {e.name}") from None
    except UnicodeDecodeError:
        raise RubricError(str(path), None, "not UTF-8 text; save the file as UTF-8") from None
    return env, template, sources, hashlib.sha256("\0".join(sources).encode()).hexdigest()


def render_template(template: jinja2.Template, path: Path, **context) -> str:
    """Render, reporting an error with the template's own file and line."""
    try:
        return template.render(**context).strip() + "\n"
    except Exception as e:  # noqa: BLE001 - whatever a template does while rendering (the sandbox stopping it, 1/0) is the template's error
        raise RubricError(str(path), _template_line(e, str(path)),
                          f"{type(e).__name__}: {e}" if not isinstance(e, jinja2.TemplateError) else str(e)) from None


def load_rubric(name_or_path: str | Path) -> Rubric:
    """Load a rubric by built-in name or path, rendering a sample in both modes to check it."""
    if str(name_or_path) in PRINCIPLES:
        raise RubricError(str(name_or_path), None, "is the principles template of `rlaif revise --constitution`, not a rubric")
    path = resolve_rubric_path(name_or_path)
    env, template, sources, digest = load_template(path)
    pointwise = any("response" in meta.find_undeclared_variables(env.parse(source)) for source in sources)
    rubric = Rubric(
        name=path.stem if path.parent == builtin_dir("prompts") else str(path),
        path=path,
        sha256=digest,
        labels=DEFAULT_LABELS,
        verdict_prefix=DEFAULT_VERDICT_PREFIX,
        scale=DEFAULT_SCALE if pointwise else None,
        rating_prefix=DEFAULT_RATING_PREFIX,
        _template=template,
    )
    # Rendering a sample in every form reports errors with the template's own line numbers.
    for cot in (False, True):
        rubric.render(SAMPLE["prompt"], SAMPLE["response_a"], SAMPLE["response_b"], cot=cot, reference=SAMPLE["reference"])
        if pointwise:
            rubric.render_rating(SAMPLE["prompt"], SAMPLE["response_a"], cot=cot, reference=SAMPLE["reference"])
    module = template.make_module({**SAMPLE, "messages": [{"role": "user", "content": SAMPLE["prompt"]}], "cot": False, "mode": "pairwise"})
    rubric.needs_reference = bool(getattr(module, "requires_reference", False))
    labels = tuple(getattr(module, "labels", DEFAULT_LABELS))
    if len(labels) != 2 or not all(isinstance(x, str) and x for x in labels) or labels[0] == labels[1]:
        raise RubricError(str(path), None, f"'labels' must be two different non-empty strings, got {labels!r}")
    rubric.labels = labels  # type: ignore[assignment]
    rubric.verdict_prefix = str(getattr(module, "verdict_prefix", DEFAULT_VERDICT_PREFIX))
    if pointwise:
        scale = tuple(getattr(module, "scale", DEFAULT_SCALE))
        if len(set(scale)) != len(scale) or len(scale) < 2 or not all(_is_number(x) for x in scale):
            raise RubricError(str(path), None, f"'scale' must be two or more different numbers written as strings, got {scale!r}")
        rubric.scale = scale
        rubric.rating_prefix = str(getattr(module, "rating_prefix", DEFAULT_RATING_PREFIX))
    return rubric


def _is_number(text: object) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return isinstance(text, str)


def _sources(env: jinja2.Environment, name: str, seen: set[str] | None = None) -> list[str]:
    """The source of a template and of every template it extends or includes."""
    seen = set() if seen is None else seen
    if name in seen:
        return []
    seen.add(name)
    source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
    out = [source]
    for ref in meta.find_referenced_templates(env.parse(source)):
        if ref:
            out.extend(_sources(env, ref, seen))
    return out

