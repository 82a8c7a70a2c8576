"""Labeling: the `rlaif label` run (input rows -> judged pairs -> pairs.jsonl) and `rlaif revise`."""

from rlaif.labeling.run import LabelConfig, LabelResult, label

__all__ = ["LabelConfig", "LabelResult", "label"]
