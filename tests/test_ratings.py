"""Bradley–Terry and Elo against hand computations, the bootstrap, and `rlaif rate`."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.errors import InputError
from rlaif.evaluate.ratings import SCALE, Game, bradley_terry, elo, ratings, read_games
from tests.conftest import write_jsonl


def games(a: str, b: str, wins: int, losses: int, ties: int = 0, group: str = "g") -> list[Game]:
    return [Game(a, b, 1.0, f"{group}{i}") for i in range(wins)] + [Game(a, b, 0.0, f"{group}w{i}") for i in range(losses)] + \
        [Game(a, b, 0.5, f"{group}t{i}") for i in range(ties)]


def test_bradley_terry_on_a_hand_made_tournament():
    # A beats B 2 of 3 (odds 2), B beats C 2 of 3 (odds 2), A beats C 4 of 5 (odds 4 = 2 · 2):
    # θ_A − θ_B = θ_B − θ_C = log 2 fits every pair's win share exactly, so it is the MLE.
    tournament = games("A", "B", 2, 1) + games("B", "C", 2, 1, group="h") + games("C", "A", 1, 4, group="i")
    theta = bradley_terry(tournament, ["A", "B", "C"])
    assert theta == pytest.approx([math.log(2), 0.0, -math.log(2)], abs=1e-9)
    # on the Elo scale: 400 log10(2) ≈ 120.4 points apart
    assert SCALE * (theta[0] - theta[1]) == pytest.approx(400 * math.log10(2))


def test_bradley_terry_fit_matches_each_players_expected_score_to_its_actual_score():
    # An inconsistent tournament with ties: no θ fits every pair, but at the MLE each player's
    # expected score Σ σ(θ_i − θ_j) equals its actual score (the gradient is 0).
    tournament = games("A", "B", 3, 1, 2) + games("B", "C", 3, 1, group="h") + games("C", "A", 2, 1, group="i")
    players = ["A", "B", "C"]
    theta = dict(zip(players, bradley_terry(tournament, players)))
    for p in players:
        actual = sum(g.score if g.a == p else 1 - g.score for g in tournament if p in (g.a, g.b))
        expected = sum(1 / (1 + math.exp(-(theta[p] - theta[g.b if g.a == p else g.a]))) for g in tournament if p in (g.a, g.b))
        assert expected == pytest.approx(actual, abs=1e-8)
    assert sum(theta.values()) == pytest.approx(0, abs=1e-12)


def test_l2_keeps_a_player_who_won_every_game_finite():
    theta = bradley_terry(games("A", "B", 4, 0), ["A", "B"], l2=0.01)
    # the penalised MLE: 4 (1 − σ(2t)) = 0.01 t with θ = (t, −t)
    t = theta[0]
    assert np.isfinite(theta).all() and t > 0
    assert 4 * (1 - 1 / (1 + math.exp(-2 * t))) == pytest.approx(0.01 * t, abs=1e-8)


def test_elo_updates_by_hand():
    # A beats B from 1000 each: E_A = ½, so A +16, B −16. Then B beats A:
    # E_B = 1 / (1 + 10^(32/400)) = 0.45408, so B gains 32 · 0.54592 = 17.470.
    r = elo([Game("A", "B", 1.0, "1"), Game("A", "B", 0.0, "2")], ["A", "B"], k=32)
    e_b = 1 / (1 + 10 ** (32 / 400))
    assert r == pytest.approx([1016 - 32 * (1 - e_b), 984 + 32 * (1 - e_b)])
    assert r[1] == pytest.approx(1001.470, abs=1e-3)


def test_ratings_rank_players_with_intervals_that_resample_prompts():
    tournament = games("strong", "base", 8, 2) + games("weak", "base", 2, 8, group="h") + games("strong", "weak", 7, 3, group="i")
    result = ratings(tournament, rounds=200, seed=1)
    assert list(result["players"]) == ["strong", "base", "weak"]
    for r in result["players"].values():
        assert r["bt_low"] <= r["bt"] <= r["bt_high"] and r["elo_low"] <= r["elo_high"]
        assert r["games"] == 20
    assert result["players"]["strong"]["bt_low"] > result["players"]["weak"]["bt_high"]
    assert result == ratings(tournament, rounds=200, seed=1)  # seeded
    # one prompt holding every game: each resample is the whole set, so no spread at all
    single = [Game(g.a, g.b, g.score, "one") for g in tournament]
    r = ratings(single, rounds=20)["players"]["strong"]
    assert r["bt_low"] == pytest.approx(r["bt"]) == pytest.approx(r["bt_high"])


def test_read_games_takes_compare_judgments_and_arena_battles(tmp_path):
    compare_dir = tmp_path / "cmp"
    compare_dir.mkdir()
    write_jsonl(compare_dir / "judgments.jsonl", [
        {"a": "dpo", "b": "base", "prompt_id": "p1", "outcome": 1.0},
        {"a": "dpo", "b": "base", "prompt_id": "p2", "outcome": None},  # the judge gave no verdict
    ])
    arena = write_jsonl(tmp_path / "battles.jsonl", [{"model_a": "x", "model_b": "y", "winner": "tie", "question_id": 7}])
    assert read_games([compare_dir, arena]) == [Game("dpo", "base", 1.0, "p1"), Game("x", "y", 0.5, "7")]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"a": "p", "b": "q", "outcome": 1}, {"a": "p", "b": "q", "outcome": 2}])
    with pytest.raises(InputError, match=r"bad.jsonl:2: field 'outcome': expected 1, 0.5, 0 or null"):
        read_games([bad])
    bad = write_jsonl(tmp_path / "bad2.jsonl", [{"model_a": "x", "model_b": "", "winner": "model_a"}])
    with pytest.raises(InputError, match=r"bad2.jsonl:1: field 'model_b'"):
        read_games([bad])


def test_rate_command_prints_the_table_and_writes_json(tmp_path):
    battles = [{"model_a": "a", "model_b": "b", "winner": w, "question_id": i} for i, w in enumerate(["model_a"] * 6 + ["model_b"] * 2)]
    path = write_jsonl(tmp_path / "battles.jsonl", battles)
    result = CliRunner().invoke(main, ["rate", str(path), "--bootstrap", "50", "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2].startswith("| `a` | 1095 ")  # θ_a − θ_b ≈ log 3 (odds 6:2, less a little for L2): ±95 points
    assert lines[3].startswith("| `b` | 905 ")
    assert (tmp_path / "r.json").exists()
    bad = CliRunner().invoke(main, ["rate", str(tmp_path / "r.json")])
    assert bad.exit_code != 0 and "expected a JSON object" not in bad.output and "r.json" in bad.output
