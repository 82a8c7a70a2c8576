import pytest

from rlaif.data import Pair
from rlaif.debias import consistent, plan_orders, preference_for_a
from rlaif.errors import ConfigError
from rlaif.judge import Verdict
from rlaif.labeling import _row


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
    with pytest.raises(ConfigError, match="unknown debias mode"):
        plan_orders("sometimes", "x")


def test_row_orients_evidence_to_chosen_and_rejected():
    pair = Pair("p1", "q", a="A text", b="B text", human=1.0)  # the human preferred A
    # Both orders favour B: A-first says 0.3 for A, B-first says 0.6 for B.
    row = _row(pair, [(True, Verdict(0.3)), (False, Verdict(0.6))], "j", "r", chat=False)
    assert row["chosen"] == "B text" and row["rejected"] == "A text"
    assert row["ai_preference"] == pytest.approx((0.7 + 0.6) / 2)
    assert [o["first"] for o in row["orders"]] == ["rejected", "chosen"]
    assert row["consistent"] is True and row["human_preference"] == 0.0


def test_row_in_chat_form_matches_trl_conversational_format():
    pair = Pair("p1", [{"role": "user", "content": "hi"}], a="x", b="y")
    row = _row(pair, [(True, Verdict(0.9)), (False, Verdict(0.2))], "j", "r", chat=True)
    assert row["chosen"] == [{"role": "assistant", "content": "x"}]
    assert row["prompt"] == [{"role": "user", "content": "hi"}] and "human_preference" not in row
