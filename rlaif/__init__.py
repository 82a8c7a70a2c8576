"""rlaif: turn AI feedback into preference data, and train on it."""

__version__ = "0.1.0"

from rlaif.data import Example, Pair, iter_examples, load_examples, make_pairs
from rlaif.errors import ConfigError, InputError, UserError
from rlaif.judge import JudgeRequest, Verdict, load_judge
from rlaif.labeling import LabelConfig, LabelResult, label
from rlaif.rubric import Rubric, load_rubric

__all__ = [
    "ConfigError", "Example", "InputError", "JudgeRequest", "LabelConfig", "LabelResult", "Pair", "Rubric",
    "UserError", "Verdict", "__version__", "iter_examples", "label", "load_examples", "load_judge", "load_rubric", "make_pairs",
]
