"""Ranking many candidates per prompt within a call budget: the strategies and their fit, and
`rlaif label` writing the pairs a ranking gives, against a judge that knows each candidate's utility."""

import json
import math
from itertools import combinations

import numpy as np
import pytest

from rlaif.errors import ConfigError
from rlaif.inputs import Example
from rlaif.judging.candidates import Ranked
from rlaif.judging.ranking import Evidence, bradley_terry, intransitive_triples, next_asks, tournament_asks, written_pairs
from rlaif.labeling.run import LabelConfig, label
from tests.conftest import write_jsonl
from tests.loopback import Loopback
from tests.utility_judge import UtilityJudge, candidate_rows, scores


def exact(utilities: list[float]) -> Evidence:
    """Evidence from a judge that always prefers the higher utility, with no position bias."""
    ev = Evidence(len(utilities))
    for i, j in combinations(range(len(utilities)), 2):
        p = 1.0 if utilities[i] > utilities[j] else 0.0
        ev.answers[i, j] = [(i, p), (j, 1 - p)]
    return ev


def test_the_fit_is_the_maximum_of_its_stated_posterior():
    # θ̂ and its covariance against the docstring's log posterior, computed here by finite differences.
    ev = Evidence(3, ratings={0: 4.0, 1: 2.5, 2: 3.0})
    ev.answers = {(0, 1): [(0, 0.9), (1, 0.4)], (1, 2): [(2, 0.7), (1, 0.65)], (0, 2): [(0, 0.8)]}
    theta, cov = bradley_terry(ev)

    def log_posterior(x):
        t, beta = x[:3], x[3]
        m = np.array([4.0, 2.5, 3.0]) - 3.1666666666666665
        total = -((t - m) ** 2).sum() / (2 * 3.0**2) - beta**2 / 2
        for (i, j), found in ev.answers.items():
            for first, p in found:
                z = t[first] - t[i + j - first] + beta
                total += p * math.log(1 / (1 + math.exp(-z))) + (1 - p) * math.log(1 / (1 + math.exp(z)))
        return total

    beta = 0.0  # β's optimum, found by a line search at θ̂ (the fit returns θ only)
    for step in (1.0, 0.1, 0.01, 0.001, 1e-4, 1e-5):
        while log_posterior([*theta, beta + step]) > log_posterior([*theta, beta]):
            beta += step
        while log_posterior([*theta, beta - step]) > log_posterior([*theta, beta]):
            beta -= step
    x, h = np.array([*theta, beta]), 1e-4
    grad = [(log_posterior(x + h * e) - log_posterior(x - h * e)) / (2 * h) for e in np.eye(4)]
    hess = np.array([[(log_posterior(x + h * a + h * b) - log_posterior(x + h * a - h * b) - log_posterior(x - h * a + h * b)
                       + log_posterior(x - h * a - h * b)) / (4 * h * h) for b in np.eye(4)] for a in np.eye(4)])
    assert np.abs(grad).max() < 1e-4
    assert cov == pytest.approx(np.linalg.inv(-hess)[:3, :3], abs=1e-3)
    assert theta[0] > theta[2] > theta[1]


@pytest.mark.parametrize("n", [7, 8])
def test_the_tournament_finds_the_ends_with_as_few_comparisons_as_it_promises(n):
    rng = np.random.default_rng(n)
    utilities = list(rng.normal(size=n))
    full = exact(utilities)
    ev = Evidence(n)
    while True:
        asks, decided = tournament_asks(ev)
        if decided:
            break
        for a in asks:
            ev.answers[a.pair] = full.answers[a.pair]
    assert decided == (int(np.argmax(utilities)), int(np.argmin(utilities)))
    assert len(ev.answers) == math.ceil(3 * n / 2) - 2


def test_a_cycle_is_counted_and_an_unseparated_pair_is_not_written():
    ev = Evidence(4)
    ev.answers = {(0, 1): [(0, 0.9), (1, 0.2)], (1, 2): [(1, 0.8), (2, 0.3)], (0, 2): [(2, 0.9), (0, 0.2)],  # 0 > 1 > 2 > 0
                  (0, 3): [(0, 0.9), (3, 0.9)]}  # both orders prefer whatever is shown first: not separated
    assert intransitive_triples(ev) == 1
    pairs, unseparated = written_pairs(ev, [0, 1, 2, 3], "best-worst", False)
    assert pairs == [(2, 0)] and unseparated == 0  # the furthest-apart pair the judge separated (0-3 is not)
    assert written_pairs(ev, [0, 1, 2, 3], "best-rest", False) == ([(0, 1), (2, 0)], 1)


def test_win_shares_are_the_share_of_the_others_each_candidate_beats():
    # P(0 ≻ 1) = 0.9, P(0 ≻ 2) = 0.7, P(1 ≻ 2) = 0.4, each judged in one order with no bias
    ev = Evidence(3)
    ev.answers = {(0, 1): [(0, 0.9)], (0, 2): [(0, 0.7)], (1, 2): [(1, 0.4)]}
    ranked = Ranked(Example("x", "q", ["a", "b", "c"]), [0, 1, 2], ev, 6, scores=[0.0, 0.0, 0.0])
    assert ranked.win_shares() == pytest.approx([(0.9 + 0.7) / 2, (0.1 + 0.4) / 2, (0.3 + 0.6) / 2])
    del ev.answers[1, 2]  # not compared: σ(score difference) stands in
    ranked.scores = [0.0, 1.0, 0.0]
    assert ranked.win_shares()[2] == pytest.approx((0.3 + 1 / (1 + math.e)) / 2)


def test_adaptive_asks_stay_within_the_budget_and_end():
    full = exact(list(np.random.default_rng(0).normal(size=8)))
    for budget in (10, 16, 24, 40):
        ev, calls = Evidence(8), 0
        while asks := next_asks(ev, "adaptive", "best-worst", budget, calls, False):
            for a in asks:
                ev.answers[a.pair] = full.answers[a.pair]
                calls += 2
        assert calls <= budget and ev.compared(*written_pairs(ev, list(range(8)), "best-worst", False)[0][0])


@pytest.fixture
def ranking_judge(tmp_path):
    """A loopback server that judges from each candidate's utility (see tests/utility_judge.py), and its judge config."""

    def make(judge: UtilityJudge):
        srv = Loopback(verdict_probs=judge)
        path = tmp_path / "judge.toml"
        path.write_text('backend = "openai"\nmodel = "utility"\n[options]\n'
                        f'base_url = "{srv.url}/v1"\napi_key_env = ""\nconcurrency = 16\n')
        return srv, str(path)

    return make


def test_the_default_ranking_spends_3n_calls_and_writes_the_pairs_all_pairs_would(ranking_judge, tmp_path):
    # N = 8 over 200 prompts, a judge with position bias and noise (docs/benchmarks.md#ranked-candidates).
    rows = candidate_rows(200, 8)
    data = str(write_jsonl(tmp_path / "candidates.jsonl", rows))
    srv, judge = ranking_judge(UtilityJudge(tau=0.7, beta=1.0, sigma=0.7))
    found = {}
    with srv:
        for strategy in ("all-pairs", None):
            out = tmp_path / (strategy or "default")
            result = label(LabelConfig(data, str(out), judge=judge, ranking=strategy, progress=False))
            found[strategy] = scores(out, rows)
    default, every = found[None], found["all-pairs"]
    assert every["calls_per_prompt"] == 56 and default["calls_per_prompt"] <= 24
    assert default["ordered_right"] >= 0.99 and default["gap_share"] >= every["gap_share"] - 0.02
    m = result.manifest
    assert (m["ranking"]["strategy"] == "adaptive" and m["ranking"]["rows"] == 200
            and m["ranking"]["calls_per_row"] == default["calls_per_prompt"])
    assert m["counts"]["labeled"] + m["ranking"]["unseparated"] == 200
    assert f"{m['ranking']['calls_per_row']:.1f} calls a row" in (tmp_path / "default" / "README.md").read_text()  # the data set card
    ranking = json.loads((tmp_path / "default" / "rankings.jsonl").read_text().splitlines()[0])
    assert [c["rank"] for c in ranking["candidates"]] == list(range(1, 9)) and all(c["se"] > 0 for c in ranking["candidates"])
    row = result.rows[0]
    assert row["ranking"]["chosen"]["rank"] < row["ranking"]["rejected"]["rank"] and len(row["orders"]) == 2 and row["consistent"]


def test_a_bigger_budget_or_other_pairs_pay_only_for_new_comparisons(ranking_judge, tmp_path):
    rows = candidate_rows(20, 8, seed=1)
    data = str(write_jsonl(tmp_path / "candidates.jsonl", rows))
    cache = str(tmp_path / "cache.sqlite")
    srv, judge = ranking_judge(UtilityJudge())
    with srv:
        small = label(LabelConfig(data, str(tmp_path / "small"), judge=judge, max_calls_per_prompt=14, cache=cache, progress=False))
        asked = srv.requests
        big = label(LabelConfig(data, str(tmp_path / "big"), judge=judge, max_calls_per_prompt=24, cache=cache, progress=False))
        asked_big = srv.requests - asked
        rest = label(LabelConfig(data, str(tmp_path / "rest"), judge=judge, max_calls_per_prompt=24, pairs="best-rest",
                                 cache=cache, progress=False))
        again = label(LabelConfig(data, str(tmp_path / "rest"), judge=judge, max_calls_per_prompt=24, pairs="best-rest",
                                  cache=cache, progress=False))
    assert small.manifest["ranking"]["calls_per_row"] <= 14 and asked == small.manifest["judge_calls"]["made"]
    # The larger budget asks the smaller one's questions first, from the cache: all of them but
    # at most each prompt's last comparison (both orders), which it may come to later or not at all.
    assert big.manifest["judge_calls"]["cached"] >= small.manifest["judge_calls"]["total"] - 2 * 20
    assert big.manifest["judge_calls"]["made"] == asked_big < big.manifest["judge_calls"]["total"]
    assert rest.manifest["judge_calls"]["cached"] > 0 and len(rest.rows) > len(big.rows)
    assert again.manifest["judge_calls"]["made"] == 0 and again.rows == rest.rows


def test_bad_ranking_settings_are_one_line_errors_before_any_call(ranking_judge, tmp_path):
    data = str(write_jsonl(tmp_path / "candidates.jsonl", candidate_rows(3, 8)))
    srv, judge = ranking_judge(UtilityJudge())
    with srv:
        with pytest.raises(ConfigError, match=r"--max-calls-per-prompt 9: ranking 8 candidates with --ranking adaptive "
                                              r"and --pairs best-worst takes at least 10"):
            label(LabelConfig(data, str(tmp_path / "out"), judge=judge, max_calls_per_prompt=9, progress=False))
        with pytest.raises(ConfigError, match="--pairs all labels every pair by its own comparison"):
            LabelConfig(data, str(tmp_path / "out"), judge=judge, pairs="all", ranking="adaptive")
        with pytest.raises(ConfigError, match="--batch-api"):
            label(LabelConfig(data, str(tmp_path / "out"), judge=judge, batch_api=True, progress=False))
    assert srv.requests == 0


def test_a_data_sets_prompts_with_generated_candidates_give_one_ranked_pair_each(tmp_path, judge_file):
    # HH rows read for their prompts only; four candidates sampled per prompt (the loopback writes
    # "GOOD answer" for even seeds, "weak answer" for odd ones), ranked, best against worst.
    from tests.conftest import HH

    with Loopback() as srv:
        config = judge_file(srv)
        result = label(LabelConfig(f"{HH}?rows=0:6", str(tmp_path / "out"), judge=config, generator=config, prompts_only=True,
                                   num_responses=4, progress=False))
    assert result.manifest["ranking"]["rows"] == 6 and len(result.rows) == 6
    assert all("GOOD" in row["chosen"][-1]["content"] and "weak" in row["rejected"][-1]["content"] for row in result.rows)
    assert all("human_preference" not in row and row["ranking"]["candidates"] == 4 for row in result.rows)
