"""The comparison's estimators against hand computations."""

import math

import pytest

from rlaif.stats import distinct_n, length_controlled_win_rate, mean_interval, outcome, paired_difference, wilson_interval, win_rate


def test_outcome_counts_disagreeing_orders_as_a_tie():
    assert outcome(0.9, True) == 1.0 and outcome(0.1, True) == 0.0
    assert outcome(0.9, False) == 0.5  # the two orders picked different responses
    assert outcome(0.5, None) == 0.5 and outcome(0.7, None) == 1.0  # one order only


def test_win_rate_with_ties_and_its_interval_over_prompts():
    # three prompts, two samples each: means 1, 0.75 (a win and a tie), 0
    result = win_rate([[1.0, 1.0], [1.0, 0.5], [0.0, 0.0]])
    assert result["win_rate"] == pytest.approx(1.75 / 3)
    sd = math.sqrt(((1 - 1.75 / 3) ** 2 + (0.75 - 1.75 / 3) ** 2 + (1.75 / 3) ** 2) / 2)
    half = 1.959963984540054 * sd / math.sqrt(3)
    assert result["low"] == pytest.approx(max(0.0, 1.75 / 3 - half)) and result["high"] == pytest.approx(min(1.0, 1.75 / 3 + half))
    assert result["ties"] == pytest.approx(1 / 6) and result["prompts"] == 3
    m, low, high = mean_interval([2.0, 4.0])
    assert (m, low, high) == pytest.approx((3.0, 3.0 - 1.959963984540054 * math.sqrt(2) / math.sqrt(2), 3.0 + 1.959963984540054))


def test_length_controlled_win_rate_removes_a_pure_length_preference():
    # The policy wins exactly when its response is longer: half its responses are longer,
    # half shorter, by the same amounts, so at equal length it is a coin flip.
    deltas = [d for d in (5, 10, 20, 40) for _ in range(5)] + [-d for d in (5, 10, 20, 40) for _ in range(5)]
    outcomes = [1.0 if d > 0 else 0.0 for d in deltas]
    outcomes[0], outcomes[-1] = 0.0, 1.0  # not perfectly separable, so the fit converges
    assert length_controlled_win_rate(outcomes, deltas) == pytest.approx(0.5, abs=1e-3)
    # When lengths do not matter the fit returns the plain win rate: 3 wins in 4 at every length
    deltas = [-10, -10, -10, -10, 10, 10, 10, 10]
    outcomes = [1.0, 1.0, 1.0, 0.0] * 2
    assert length_controlled_win_rate(outcomes, deltas) == pytest.approx(0.75, abs=1e-3)
    # Ties count half: all ties is 0.5; lengths that never differ give no fit
    assert length_controlled_win_rate([0.5, 0.5, 0.5], [1, 2, 3]) == 0.5
    assert length_controlled_win_rate([1.0, 0.0], [3, 3]) is None


def test_paired_difference_and_its_standard_error():
    result = paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 4.0])  # differences 2, 3, 0
    assert result["difference"] == pytest.approx(5 / 3)
    assert result["se"] == pytest.approx(math.sqrt(((2 - 5 / 3) ** 2 + (3 - 5 / 3) ** 2 + (5 / 3) ** 2) / 2) / math.sqrt(3))


def test_wilson_interval_by_hand():
    # 31 of 50: centre (0.62 + z²/100) / (1 + z²/50) = 0.6114, half-width 0.1299 (z = 1.96)
    assert wilson_interval(31, 50) == pytest.approx((0.4815, 0.7414), abs=5e-4)


def test_distinct_2():
    # bigrams: (a b) (b a) (a b) | (a b) -> 2 distinct of 4
    assert distinct_n(["a b a b", "a b"], 2) == 0.5
    assert distinct_n(["one"], 2) is None


def test_rouge_and_bleu_by_hand():
    from rlaif.evaluate.text_metrics import bleu, rouge

    # "the cat sat" against "the cat sat on the mat": unigrams 3 of 3 predicted are in the
    # reference (P = 1), 3 of 6 reference unigrams are predicted (R = ½): F1 = 2/3.
    # Bigrams: 2 of 2 and 2 of 5: F1 = 2·1·0.4 / 1.4 = 4/7. L: the longest common subsequence is 3 words, as ROUGE-1.
    r = rouge(["the cat sat"], ["the cat sat on the mat"])
    assert r == pytest.approx({"rouge1": 2 / 3, "rouge2": 4 / 7, "rougeL": 2 / 3, "rougeLsum": 2 / 3})
    # BLEU-n: every 1-, 2- and 3-gram of the prediction is in the reference (precision 1), no
    # 4-gram exists (BLEU-4 = 0); the brevity penalty is exp(1 − 6/3) = e⁻¹.
    b = bleu(["the cat sat"], ["the cat sat on the mat"])
    assert b == pytest.approx({"bleu1": math.exp(-1), "bleu2": math.exp(-1), "bleu3": math.exp(-1), "bleu4": 0.0}, abs=1e-6)
    assert bleu(["a b c d e"], ["a b c d e"])["bleu4"] == pytest.approx(1.0)


def test_meteor_is_reported_unavailable_without_wordnet_data(monkeypatch):
    import nltk

    from rlaif.evaluate.text_metrics import reference_metrics

    def missing(resource):
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", missing)
    out = reference_metrics(["a b"], ["a c"], bertscore=None)
    assert "WordNet" in out["meteor"]["unavailable"] and "unavailable" in out["bertscore"]
