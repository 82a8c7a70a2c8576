"""`rlaif rate`: Elo and Bradley–Terry ratings of several policies (or checkpoints) from any set
of pairwise judgments, with bootstrap intervals.

A *game* is one judged comparison: players a and b, and a's score s (1 a win, 0 a loss, ½ a
tie). Bradley–Terry says P(a ≻ b) = σ(θ_a − θ_b); its fit does not depend on the order of the
games. Elo updates ratings game by game in the order given, so it does. Both are reported on
the Elo scale (1000 + 400 · log10 odds), as Chatbot Arena reports them, and intervals come from
resampling prompts (the unit that was sampled) with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlaif.errors import InputError
from rlaif.inputs import read_records

INITIAL = 1000.0
SCALE = 400 / math.log(10)  # Elo points per unit of θ (log odds)
ARENA_WINNERS = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}


@dataclass(frozen=True)
class Game:
    a: str
    b: str
    score: float  # a's: 1 win, 0 loss, ½ tie
    group: str  # what the bootstrap resamples (the prompt)


def bradley_terry(games: Sequence[Game], players: Sequence[str], l2: float = 0.0, tol: float = 1e-10) -> np.ndarray:
    """θ maximising Σ_g [s_g log σ(θ_a − θ_b) + (1 − s_g) log σ(θ_b − θ_a)] − (l2 / 2) ‖θ‖²,
    with Σ θ = 0, by Newton's method (a tie is half a win and half a loss).

    Without `l2` a player who won (or lost) every game has no finite θ; `l2` > 0 keeps it finite.
    games: G games among `players` (P names) -> θ of shape (P,).
    """
    index = {p: i for i, p in enumerate(players)}
    a = np.array([index[g.a] for g in games])
    b = np.array([index[g.b] for g in games])
    s = np.array([g.score for g in games], dtype=float)
    n = len(players)
    theta = np.zeros(n)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(theta[a] - theta[b])))
        grad = np.bincount(a, s - p, n) - np.bincount(b, s - p, n) - l2 * theta
        w = p * (1 - p)
        hess = np.zeros((n, n))
        np.add.at(hess, (a, a), -w)
        np.add.at(hess, (b, b), -w)
        np.add.at(hess, (a, b), w)
        np.add.at(hess, (b, a), w)
        hess -= l2 * np.eye(n)
        step = np.linalg.lstsq(hess, -grad, rcond=None)[0]  # least squares: the Hessian is singular along θ + c
        theta += step
        theta -= theta.mean()
        if np.abs(step).max() < tol:
            break
    return theta


def elo(games: Sequence[Game], players: Sequence[str], k: float = 32.0) -> np.ndarray:
    """Online Elo from 1000, game by game: E_a = 1 / (1 + 10^((R_b − R_a) / 400)),
    R_a += K (s − E_a), R_b −= K (s − E_a). games -> ratings of shape (P,)."""
    index = {p: i for i, p in enumerate(players)}
    ratings = np.full(len(players), INITIAL)
    for g in games:
        i, j = index[g.a], index[g.b]
        expected = 1 / (1 + 10 ** ((ratings[j] - ratings[i]) / 400))
        ratings[i] += k * (g.score - expected)
        ratings[j] -= k * (g.score - expected)
    return ratings


def ratings(games: Sequence[Game], rounds: int = 1000, k: float = 32.0, l2: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """Both ratings of every player, each with a 95% percentile interval over `rounds` bootstrap
    resamples of the games' groups (prompts), and each player's games and mean score."""
    if not games:
        raise ValueError("no games to rate")
    players = sorted({g.a for g in games} | {g.b for g in games})
    by_group: dict[str, list[Game]] = {}
    for g in games:
        by_group.setdefault(g.group, []).append(g)
    groups = list(by_group.values())
    rng = np.random.default_rng(seed)
    bt_samples, elo_samples = [], []
    for _ in range(rounds):
        sample = [g for i in rng.integers(len(groups), size=len(groups)) for g in groups[i]]
        bt_samples.append(INITIAL + SCALE * bradley_terry(sample, players, l2))
        elo_samples.append(elo([sample[i] for i in rng.permutation(len(sample))], players, k))
    bt = INITIAL + SCALE * bradley_terry(games, players, l2)
    online = elo(games, players, k)
    out: dict[str, Any] = {"players": {}, "games": len(games), "groups": len(groups), "bootstrap_rounds": rounds, "k": k, "l2": l2}
    for i, p in enumerate(players):
        mine = [g.score if g.a == p else 1 - g.score for g in games if p in (g.a, g.b)]
        bt_low, bt_high = np.percentile([x[i] for x in bt_samples], [2.5, 97.5]) if rounds else (math.nan, math.nan)
        elo_low, elo_high = np.percentile([x[i] for x in elo_samples], [2.5, 97.5]) if rounds else (math.nan, math.nan)
        out["players"][p] = {"bt": float(bt[i]), "bt_low": float(bt_low), "bt_high": float(bt_high),
                             "elo": float(online[i]), "elo_low": float(elo_low), "elo_high": float(elo_high),
                             "games": len(mine), "mean_score": float(np.mean(mine))}
    out["players"] = dict(sorted(out["players"].items(), key=lambda kv: -kv[1]["bt"]))
    return out


def game_of(record: Any, file: str, line: int) -> Game | None:
    """A game from a `rlaif compare` judgment (`a`, `b`, `outcome`; None when the judge gave no
    verdict) or a Chatbot Arena battle (`model_a`, `model_b`, `winner`)."""
    if not isinstance(record, dict):
        raise InputError(file, line, None, "expected a JSON object")
    if "outcome" in record:
        names, score = ("a", "b"), record["outcome"]
        if score is None:
            return None
        if score not in (0, 0.5, 1):
            raise InputError(file, line, "outcome", f"expected 1, 0.5, 0 or null, got {score!r}")
    elif "winner" in record:
        names = ("model_a", "model_b")
        if record["winner"] not in ARENA_WINNERS:
            raise InputError(file, line, "winner", f"expected one of {', '.join(ARENA_WINNERS)}, got {record['winner']!r}")
        score = ARENA_WINNERS[record["winner"]]
    else:
        raise InputError(file, line, None, "expected a judgment (a, b, outcome: `rlaif compare`'s judgments.jsonl) "
                         "or a battle (model_a, model_b, winner)")
    for name in names:
        if not isinstance(record.get(name), str) or not record[name]:
            raise InputError(file, line, name, "expected the name of a policy")
    if record[names[0]] == record[names[1]]:
        raise InputError(file, line, names[1], "a policy cannot play itself")
    group = record.get("prompt_id", record.get("question_id", f"{file}:{line}"))
    return Game(record[names[0]], record[names[1]], float(score), str(group))


def read_games(paths: Sequence[str | Path]) -> list[Game]:
    """The games in JSONL files, or in `judgments.jsonl` of `rlaif compare` output directories."""
    games = []
    for path in paths:
        file = Path(path) / "judgments.jsonl" if Path(path).is_dir() else Path(path)
        for line, record in read_records(file):
            if isinstance(record, InputError):
                raise record
            if (game := game_of(record, str(file), line)) is not None:
                games.append(game)
    if not games:
        raise InputError(", ".join(map(str, paths)), None, None, "no judged games to rate")
    return games


def format_ratings(result: dict[str, Any]) -> str:
    """The ratings as a Markdown table, best first."""
    lines = ["| policy | Bradley–Terry [95% CI] | Elo [95% CI] | games | mean score |", "|---|---|---|---|---|"]
    for name, r in result["players"].items():
        lines.append(f"| `{name}` | {r['bt']:.0f} [{r['bt_low']:.0f}, {r['bt_high']:.0f}] | "
                     f"{r['elo']:.0f} [{r['elo_low']:.0f}, {r['elo_high']:.0f}] | {r['games']} | {r['mean_score']:.3f} |")
    lines.append("")
    lines.append(f"{result['games']} games over {result['groups']} prompts; intervals: {result['bootstrap_rounds']} "
                 "bootstrap resamples of the prompts. Bradley–Terry on the Elo scale (1000 + 400 log10 odds, "
                 f"L2 {result['l2']}); Elo online with K = {result['k']:g} in the games' order.")
    return "\n".join(lines)
