"""Labeling and training input: records read from files and data sets (`files`), checked row by
row into examples and the pairs they make (`rows`)."""

from rlaif.inputs.files import input_name, read_records
from rlaif.inputs.rows import (
           SKIP_REASONS,
           Example,
           LoadResult,
           Pair,
           Prompt,
           as_messages,
           iter_examples,
           load_examples,
           make_pairs,
           prompt_text,
           split_transcript,
)

__all__ = ["SKIP_REASONS", "Example", "LoadResult", "Pair", "Prompt", "as_messages", "input_name", "iter_examples",
           "load_examples", "make_pairs", "prompt_text", "read_records", "split_transcript"]
