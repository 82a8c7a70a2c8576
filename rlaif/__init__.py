"""rlaif: turn AI feedback into preference data, and train on it.

The stages, each a function over a config dataclass: `label(LabelConfig(...))`,
`train(TrainConfig(...))`, `compare(CompareConfig(...))`; and the workflows that chain them,
`iterate(IterateConfig(...))` and `run_experiment(path)`.
"""

from importlib import import_module
from importlib.metadata import version

from rlaif.errors import ConfigError, InputError, UserError

__version__ = version("rlaif")

# The rest is imported when first used, so that `import rlaif` (and every `rlaif` command) does
# not load torch and the judges' SDKs before they are needed.
_PUBLIC = {
    "agreement": "rlaif.evaluate.agreement",
    "CompareConfig": "rlaif.evaluate.compare", "compare": "rlaif.evaluate.compare",
    "Example": "rlaif.inputs", "Pair": "rlaif.inputs", "iter_examples": "rlaif.inputs", "load_examples": "rlaif.inputs",
    "make_pairs": "rlaif.inputs",
    "JudgeRequest": "rlaif.judging.base", "Verdict": "rlaif.judging.base",
    "load_judge": "rlaif.judging.configs",
    "Rubric": "rlaif.judging.rubric", "load_rubric": "rlaif.judging.rubric",
    "ReviseConfig": "rlaif.labeling.revise", "revise": "rlaif.labeling.revise",
    "LabelConfig": "rlaif.labeling.run", "LabelResult": "rlaif.labeling.run", "label": "rlaif.labeling.run",
    "TrainConfig": "rlaif.trainers", "train": "rlaif.trainers",
    "run_experiment": "rlaif.workflows.experiment",
    "IterateConfig": "rlaif.workflows.iterate", "iterate": "rlaif.workflows.iterate",
}

__all__ = ["ConfigError", "InputError", "UserError", "__version__"] + list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'rlaif' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
