"""Pointwise judging: the reward-model judge, the pointwise mode of a generative judge, and
the order invariance both promise."""

import math

import pytest

from rlaif.errors import ConfigError
from rlaif.evaluate.agreement import agreement
from rlaif.inputs import load_examples
from rlaif.judging.backends.reward_model import RewardModelJudge, reward_scores, scoring_length
from rlaif.judging.configs import load_judge_config
from rlaif.labeling.run import LabelConfig, label
from rlaif.models.encoding import encode
from rlaif.models.loading import load_reward_model, load_tokenizer, position_limit
from rlaif.trainers import TrainConfig, train
from tests.conftest import HH, write_jsonl


@pytest.fixture(scope="module")
def tiny_rm(tiny, tmp_path_factory) -> str:
    """A reward model trained (two steps) from the tiny model by `rlaif train --method rm`."""
    out = tmp_path_factory.mktemp("rm")
    train(TrainConfig(method="rm", model=tiny, data=f"{HH}?rows=0:16", output=str(out), max_steps=2, batch_size=4,
                      max_length=128, progress=False))
    return str(out)


def judge_file(tmp_path, backend: str, model: str, **options) -> str:
    path = tmp_path / f"{backend}.toml"
    path.write_text(f'backend = "{backend}"\nmodel = "{model}"\n[options]\n' + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return str(path)


def text(value) -> str:
    return value[-1]["content"] if isinstance(value, list) else value


def test_reward_model_judge_scores_each_response_once(tiny_rm, tmp_path):
    judge = judge_file(tmp_path, "reward_model", tiny_rm, temperature=0.5)
    result = label(LabelConfig(f"{HH}?rows=100:106", str(tmp_path / "out"), judge=judge, progress=False))
    m = result.manifest
    assert (m["mode"] == "pointwise" and m["judge_calls"] == {"per": "response", "total": 12, "made": 12, "cached": 0}
            and m["rubric"] is None)
    assert all(r["rubric"] is None for r in result.rows)
    assert m["first_position_rate"] == {"raw": None, "labels": None} and len(result.rows) == 6 and m["tokens"]["prompt"] > 0
    # The scores are the model's own, and the preference is σ((r_chosen − r_rejected) / T).
    model, tokenizer = load_reward_model(tiny_rm), load_tokenizer(tiny_rm, padding_side="right")
    for row in result.rows:
        chosen, rejected = (s["score"] for s in sorted(row["scores"], key=lambda s: s["response"]))
        direct = reward_scores(model, tokenizer, [(row["prompt"], text(row["chosen"])),
                                                  (row["prompt"], text(row["rejected"]))], position_limit(tiny_rm), 2)
        assert [chosen, rejected] == pytest.approx(direct, abs=1e-5) and chosen >= rejected
        assert row["ai_preference"] == pytest.approx(1 / (1 + math.exp(-(chosen - rejected) / 0.5)))
    again = label(LabelConfig(f"{HH}?rows=100:106", str(tmp_path / "out"), judge=judge, progress=False))
    assert again.manifest["judge_calls"]["made"] == 0 and again.rows == result.rows
    with pytest.raises(ConfigError, match="only in mode pointwise"):
        label(LabelConfig(f"{HH}?rows=100:106", str(tmp_path / "out"), judge=judge, mode="pairwise", progress=False))


@pytest.mark.parametrize("max_length, expected", [(None, 2048), (48, 48)])
def test_reward_model_judge_reads_what_the_model_can_read_unless_told(tiny_rm, tmp_path, max_length, expected):
    # tiny_rm was trained at 128 tokens; its position limit is 2048: by default nothing is cut.
    options = {} if max_length is None else {"max_length": max_length}
    judge = judge_file(tmp_path, "reward_model", tiny_rm, **options)
    assert RewardModelJudge.identity(load_judge_config(judge))["options"]["max_length"] == max_length  # None: the model's limit
    result = label(LabelConfig(f"{HH}?rows=100:106", str(tmp_path / "out"), judge=judge, progress=False))
    tokenizer = load_tokenizer(tiny_rm, padding_side="right")
    full = [len(encode(tokenizer, r["prompt"], text(r[side]), 10**6, "x:1", True)["input_ids"])
            for r in result.rows for side in ("chosen", "rejected")]
    assert max(full) > 128  # some sequence is longer than the model was trained at, and the judge read each up to the cut
    assert result.manifest["tokens"]["prompt"] == sum(min(n, expected) for n in full)


def test_scoring_never_cuts_a_sequence_that_fits_the_model(tiny_rm, tmp_path):
    # The guard for the judge's default: every score is the model's own forward pass over the
    # whole (prompt, response), one sequence at a time, however long it is.
    import torch

    model, tokenizer = load_reward_model(tiny_rm), load_tokenizer(tiny_rm, padding_side="right")
    items = [(ex.prompt, r) for ex in load_examples(f"{HH}?rows=0:24").examples for r in ex.responses]
    options = RewardModelJudge.parse_options(load_judge_config(judge_file(tmp_path, "reward_model", tiny_rm)))
    scores = reward_scores(model, tokenizer, items, scoring_length(options, tiny_rm), 4)  # type: ignore[arg-type]
    whole = [encode(tokenizer, p, r, 10**6, "x:1", True)["input_ids"] for p, r in items]
    assert max(map(len, whole)) > 300  # longer than the model was trained at (128)
    with torch.no_grad():
        own = [model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in whole]
    assert scores == pytest.approx(own, abs=1e-4)


def test_a_sequence_longer_than_the_model_reads_gives_up_its_prompts_beginning(tiny_rm):
    tokenizer = load_tokenizer(tiny_rm, padding_side="right")
    limit = position_limit(tiny_rm)
    prompt, response = " ".join(f"w{i}" for i in range(2000)), "a short reply"
    whole = encode(tokenizer, prompt, response, 10**6, "x:1", True)
    cut = encode(tokenizer, prompt, response, limit, "x:1", True)
    assert limit == 2048 and len(whole["input_ids"]) > limit and cut["truncated"]
    assert cut["input_ids"] == whole["input_ids"][-limit:]  # the end of the prompt and the whole response


def twin_files(tmp_path, n: int = 12) -> tuple[str, str]:
    """HH pairs as prompt + two responses, and the same file with every pair's responses swapped."""
    examples = load_examples(f"{HH}?rows=200:{200 + n}").examples
    rows = [{"id": ex.id, "prompt": ex.prompt, "responses": ex.responses} for ex in examples]
    swapped = [{**r, "responses": r["responses"][::-1]} for r in rows]
    return str(write_jsonl(tmp_path / "pairs.jsonl", rows)), str(write_jsonl(tmp_path / "swapped.jsonl", swapped))


def decisions(path: str, out, **config) -> dict[str, str]:
    rows = label(LabelConfig(path, str(out), progress=False, **config)).rows
    return {r["id"]: text(r["chosen"]) for r in rows}


@pytest.mark.parametrize("backend", ["reward_model", "local"])
def test_pointwise_labels_do_not_depend_on_the_order_of_the_responses(backend, tiny, tiny_rm, tmp_path):
    judge = judge_file(tmp_path, backend, tiny_rm if backend == "reward_model" else tiny)
    given, swapped = twin_files(tmp_path)
    first = decisions(given, tmp_path / "given", judge=judge, mode="pointwise")
    second = decisions(swapped, tmp_path / "swapped", judge=judge, mode="pointwise")
    assert len(first) == 12 and first == second


def test_the_order_invariance_check_catches_a_position_biased_judge(tiny, tmp_path):
    # The same check on the tiny judge pairwise in one order only: its labels follow the order.
    judge = judge_file(tmp_path, "local", tiny)
    given, swapped = twin_files(tmp_path)
    first = decisions(given, tmp_path / "given", judge=judge, debias="none")
    second = decisions(swapped, tmp_path / "swapped", judge=judge, debias="none")
    assert sum(first[k] == second[k] for k in first) < len(first) / 2


def test_pointwise_mode_of_a_generative_judge_reads_the_expected_rating(tiny, tmp_path):
    judge = judge_file(tmp_path, "local", tiny)
    result = label(LabelConfig(f"{HH}?rows=300:303", str(tmp_path / "out"), judge=judge, mode="pointwise", progress=False))
    scores = [s["score"] for r in result.rows for s in r["scores"]]
    assert len(scores) == 6 and all(1.0 < s < 5.0 for s in scores) and all(s["soft"] for r in result.rows for s in r["scores"])
    assert result.manifest["rubric"]["scale"] == ["1", "2", "3", "4", "5"]
    report = agreement(tmp_path / "out")
    assert report["mode"] == "pointwise" and report["consistency_rate"] is None and report["first_position_rate_raw"] is None


def test_a_rubric_without_a_pointwise_form_is_refused_before_any_work(tiny, tmp_path):
    rubric = tmp_path / "pairs-only.j2"
    rubric.write_text("Which is better?\n1: {{ response_a }}\n2: {{ response_b }}\nPreferred Response=")
    with pytest.raises(ConfigError, match="has no pointwise form"):
        label(LabelConfig(f"{HH}?rows=0:2", str(tmp_path / "out"), judge=judge_file(tmp_path, "local", tiny), rubric=str(rubric),
                          mode="pointwise", progress=False))


def test_a_held_out_accuracy_is_the_judges_agreement_on_those_pairs(tiny, tmp_path):
    # Trained on pairs cut at 64 tokens, the reward model is evaluated on held-out pairs read
    # whole, as its judge reads them: the two figures are one.
    out = tmp_path / "rm"
    results = train(TrainConfig(method="rm", model=tiny, data=f"{HH}?rows=0:16", eval_data=f"{HH}?rows=100:140", output=str(out),
                                max_steps=2, batch_size=4, max_length=64, progress=False))
    label(LabelConfig(f"{HH}?rows=100:140", str(tmp_path / "labels"), judge=judge_file(tmp_path, "reward_model", str(out)), progress=False))
    assert results["eval/accuracy"] == agreement(tmp_path / "labels")["agreement"]
