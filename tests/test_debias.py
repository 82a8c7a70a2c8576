import pytest

from rlaif.errors import ConfigError
from rlaif.inputs import Pair
from rlaif.judging.base import Judge, JudgeRequest, Verdict
from rlaif.judging.debias import consistent, plan_orders, pointwise_preference, preference_for_a
from rlaif.judging.engine import PairJudgment
from rlaif.labeling.output import pair_row


def test_both_orders_average_by_hand():
    # A first: P(first better) = 0.9; B first: P(first better) = 0.8.
    # P(A > B) = (0.9 + (1 - 0.8)) / 2 = 0.55, and the two orders disagree.
    assert preference_for_a([(True, 0.9), (False, 0.8)]) == pytest.approx(0.55)
    assert consistent([(True, 0.9), (False, 0.8)]) is False
    # A first 0.7, B first 0.2: both say A. (0.7 + 0.8) / 2 = 0.75.
    assert preference_for_a([(True, 0.7), (False, 0.2)]) == pytest.approx(0.75)
    assert consistent([(True, 0.7), (False, 0.2)]) is True
    # A judge that always says "first" with the same confidence decides nothing.
    assert preference_for_a([(True, 0.97), (False, 0.97)]) == pytest.approx(0.5)


def test_single_order():
    assert preference_for_a([(False, 0.3)]) == pytest.approx(0.7)
    assert consistent([(False, 0.3)]) is None


def test_plan_orders():
    assert plan_orders("both", "x") == [True, False]
    assert plan_orders("none", "x") == [True]
    picks = [plan_orders("random", f"p{i}", seed=3)[0] for i in range(200)]
    assert 70 < sum(picks) < 130
    assert picks == [plan_orders("random", f"p{i}", seed=3)[0] for i in range(200)]
    with pytest.raises(ConfigError, match="unknown ordering"):
        plan_orders("sometimes", "x")


def test_row_orients_evidence_to_chosen_and_rejected():
    pair = Pair("p1", "q", a="A text", b="B text", human=1.0)  # the human preferred A
    # Both orders favour B: A-first says 0.3 for A, B-first says 0.6 for B.
    row = pair_row(pair, PairJudgment([(True, Verdict(0.3)), (False, Verdict(0.6))]), "j", "r", chat=False)
    assert row["chosen"] == "B text" and row["rejected"] == "A text"
    assert row["ai_preference"] == pytest.approx((0.7 + 0.6) / 2)
    assert [o["first"] for o in row["orders"]] == ["rejected", "chosen"]
    assert row["consistent"] is True and row["human_preference"] == 0.0


def test_row_in_chat_form_matches_trl_conversational_format():
    pair = Pair("p1", [{"role": "user", "content": "hi"}], a="x", b="y")
    row = pair_row(pair, PairJudgment([(True, Verdict(0.9)), (False, Verdict(0.2))]), "j", "r", chat=True)
    assert row["chosen"] == [{"role": "assistant", "content": "x"}]
    assert row["prompt"] == [{"role": "user", "content": "hi"}] and "human_preference" not in row


def test_pointwise_preference_by_hand():
    # σ((s_A − s_B) / T): scores 2.0 and 1.0 at T = 1 give 1 / (1 + e^-1) = 0.7310586.
    assert pointwise_preference(2.0, 1.0) == pytest.approx(0.7310586)
    assert pointwise_preference(2.0, 1.0, temperature=2.0) == pytest.approx(1 / (1 + 2.718281828 ** -0.5))
    assert pointwise_preference(3.0, 3.0) == 0.5
    assert pointwise_preference(-1000.0, 1000.0) == 0.0 and pointwise_preference(1000.0, -1000.0) == 1.0  # no overflow


def test_expected_rating_from_label_probabilities_by_hand():
    request = JudgeRequest("rate it", ("1", "2", "3", "4", "5"), "Rating=", pointwise=True)
    # Unnormalised mass 1, 1, 2, 4, 2 over ratings 1..5: (1 + 2 + 6 + 16 + 10) / 10 = 3.5.
    assert Judge.from_label_probs(request, [1, 1, 2, 4, 2]).score == pytest.approx(3.5)
    assert Judge.from_label_probs(JudgeRequest("which?"), [3, 1]).p_first == pytest.approx(0.75)


def test_pointwise_row_keeps_both_scores_and_has_no_order():
    pair = Pair("p1", "q", a="A text", b="B text", human=1.0)
    row = pair_row(pair, PairJudgment([(True, Verdict(None, score=1.0)), (False, Verdict(None, score=2.0))],
                                      pointwise=True), "j", "r", chat=False)
    assert row["chosen"] == "B text" and row["ai_preference"] == pytest.approx(0.7310586)
    assert [(s["response"], s["score"]) for s in row["scores"]] == [("rejected", 1.0), ("chosen", 2.0)]
    assert "orders" not in row and row["consistent"] is None and row["mode"] == "pointwise" and row["human_preference"] == 0.0
