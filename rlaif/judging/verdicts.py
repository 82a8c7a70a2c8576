"""Reading a judge's verdict: from its text (the label after the verdict prefix), or from the
top log-probabilities of the token where the label stands."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


def find_verdict(text: str, labels: Sequence[str], verdict_prefix: str) -> tuple[int, int] | None:
    """Which label a judge's text chose and where in the text it stands, or None if it cannot be read.

    The last `verdict_prefix` followed by a label wins; a reply that is just a label counts too.
    """
    alternatives = "|".join(re.escape(label) for label in labels)
    found = list(re.finditer(rf"{re.escape(verdict_prefix.strip())}\s*\**\s*({alternatives})(?![\w])", text))
    if not found:
        found = [m for m in [re.fullmatch(rf"\W*({alternatives})\W*", text)] if m]
    if not found:
        return None
    return list(labels).index(found[-1].group(1)), found[-1].start(1)


def parse_verdict(text: str, labels: Sequence[str], verdict_prefix: str) -> int | None:
    """Which label (its index) a judge's text chose, or None if it cannot be read."""
    found = find_verdict(text, labels, verdict_prefix)
    return None if found is None else found[0]


def top_at(tokens: Sequence[tuple[str, dict[str, float]]], offset: int) -> dict[str, float] | None:
    """The top log-probabilities of the reply's token that holds character `offset` (where the
    verdict stands), from the reply's (token, {candidate: logprob}) in order; None if there are none."""
    seen = 0
    for token, top in tokens:
        if seen + len(token) > offset:
            return top or None
        seen += len(token)
    return None


def label_probs(top: dict[str, float], labels: Sequence[str]) -> list[float]:
    """The labels' probabilities among a token's top log-probabilities.

    A candidate spells a label when it is the label with at most spaces, quotes, braces or a
    comma around it (a JSON value's token may carry its quote); the mass of every candidate
    that spells it is summed. A label missing from the list is given the smallest listed
    probability: an upper bound on its true mass.
    """
    mass = dict.fromkeys(labels, 0.0)
    for candidate, logprob in top.items():
        spelled = candidate.strip(' "{},')
        if spelled in mass:
            mass[spelled] += math.exp(logprob)
    floor = math.exp(min(top.values()))
    return [mass[label] or floor for label in labels]
