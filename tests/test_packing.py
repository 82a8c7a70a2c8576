"""Packed pairs (each prompt once, 4D mask) give what two separate forward passes give, also when
the blocks run piecewise (frozen states kept, the last block only at the read tokens)."""

import math

import pytest
import torch

from rlaif.errors import ConfigError
from rlaif.evaluate.scoring import summed_response_logps
from rlaif.judging.backends.reward_model import reward_scores
from rlaif.models.blocks import Layout, blocks_between, hidden_at, last_block_at, runs_piecewise
from rlaif.models.encoding import collate, encode
from rlaif.models.loading import load_causal_lm, load_reward_model, load_tokenizer
from rlaif.models.logprobs import head_logps, per_sequence, sequence_logps
from rlaif.models.packing import pack_pairs, packed_hidden
from rlaif.trainers.pairs import EncodedPair
from rlaif.trainers.reward import frozen_key, keep_frozen_states, read_columns, score_pad_token


@pytest.fixture(scope="module")
def encoded(tiny):
    tok = load_tokenizer(tiny, padding_side="right")
    long_prompt = "Count: " + " ".join(str(i) for i in range(40))
    raw = [
        ("Is 3 a number?", "Yes, 3 is a number.", "no no no"),
        ("Is 3 a number?", "Sure, yes", "Sure, no"),  # the responses share a prefix too
        ("Hi", "same", "same"),  # identical responses: everything is shared
        (long_prompt, "ok", "a much longer answer, so the prompt is cut differently"),  # no common prompt
    ]
    return tok, [EncodedPair(encode(tok, p, c, 48, "x:1", True), encode(tok, p, r, 48, "x:1", True), 1.0) for p, c, r in raw]


def separate(model, pairs):
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], model.config.pad_token_id)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def test_packed_log_probs_equal_separate_forward_passes(tiny, encoded):
    tok, pairs = encoded
    assert pairs[3][0]["input_ids"][:5] != pairs[3][1]["input_ids"][:5]  # the last pair's prompts were cut differently
    model = load_causal_lm(tiny, "cpu")
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], tok.pad_token_id)
    with torch.no_grad():
        expected = sequence_logps(separate(model, pairs).logits, batch["labels"])
        packed = pack_pairs(pairs, tok.pad_token_id, "cpu")
        tokens = head_logps(packed_hidden(model, packed.packed, logits_to_keep=1)[packed.token_index], model.lm_head.weight,
                            packed.targets, chunk_size=7)
        got = per_sequence(tokens, packed.sequence, packed.n_sequences)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    assert got[2] == got[6]  # identical responses, identical log-probabilities
    # where the prompts are shared they are computed once: fewer positions than the sequences apart
    apart = collate([s for p in pairs[:3] for s in (p.chosen, p.rejected)], tok.pad_token_id)["input_ids"]
    assert pack_pairs(pairs[:3], tok.pad_token_id, "cpu").packed.input_ids.numel() < 0.75 * apart.numel()


def test_packed_reward_scores_equal_separate_forward_passes(tiny, encoded):
    tok, pairs = encoded
    model = load_reward_model(tiny, "cpu", tok.unk_token_id)
    with torch.no_grad():
        expected = separate(model, pairs).logits[:, 0]
        packed = pack_pairs(pairs, tok.unk_token_id, "cpu")
        got = model.score(packed_hidden(model, packed.packed)[packed.last_index])[:, 0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_kept_frozen_states_and_the_last_block_at_the_read_tokens_give_the_whole_models_scores(tiny, encoded):
    """One pass keeps what enters block n − k for k = 0, 1, 2 (k = 0: the final states at the read
    tokens); from each, the top blocks with the last one only at the read tokens give the scores
    of the separate forward passes, and the same gradients (2 heads sharing 1 key/value head)."""
    tok, pairs = encoded
    model = load_reward_model(tiny, "cpu", tok.unk_token_id)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    batch = pack_pairs(pairs, tok.unk_token_id, "cpu")
    layout, n = Layout.of(batch.packed), len(model.model.layers)
    cache: dict = {}
    keep_frozen_states(model, pairs, [0, 1, 2], cache, tok.unk_token_id, "cpu")
    assert len(cache) == 3 * len(pairs)
    with pytest.raises(ConfigError, match="--train-layers 3: the model has 2 transformer blocks"):
        keep_frozen_states(model, pairs, [1, 3], {}, tok.unk_token_id, "cpu")

    def top(k):
        if k == 0:
            return torch.stack([cache[frozen_key(0, p)] for p in pairs])
        entering = torch.cat([cache[frozen_key(k, p)] for p in pairs])
        return last_block_at(model, blocks_between(model, entering, n - k, n - 1, layout), layout, read_columns(batch))

    expected = separate(model, pairs).logits[:, 0]
    expected.sum().backward()
    want = {name: p.grad.clone() for name, p in model.model.layers[-1].named_parameters()}
    for k in (0, 1, 2):
        model.zero_grad()
        scores = model.score(top(k))[..., 0]
        torch.testing.assert_close(torch.cat([scores[:, 0], scores[:, 1]]), expected, atol=1e-5, rtol=1e-5)
        if k > 0:
            scores.sum().backward()
            for name, p in model.model.layers[-1].named_parameters():
                torch.testing.assert_close(p.grad, want[name], atol=1e-5, rtol=1e-4, msg=name)


def test_blocks_on_the_real_tokens_only_give_the_models_own_hidden_states_and_gradients(tiny, encoded):
    """DPO's log-probabilities with the padding left out of the blocks' linear layers equal those
    of the model's own forward pass, and so do their gradients; a model with activation
    checkpointing goes through its own forward pass."""
    tok, pairs = encoded
    model = load_causal_lm(tiny, "cpu")
    batch = pack_pairs(pairs, tok.pad_token_id, "cpu")
    assert batch.packed.input_ids.numel() > Layout.of(batch.packed).valid.sum() + 20  # there is padding to leave out
    grads = []
    for piecewise in (True, False):
        model.zero_grad()
        hidden = (hidden_at(model, batch.packed, batch.token_index) if piecewise
                  else packed_hidden(model, batch.packed, logits_to_keep=1)[batch.token_index])
        logps = per_sequence(head_logps(hidden, model.lm_head.weight, batch.targets), batch.sequence, batch.n_sequences)
        logps.sum().backward()
        grads.append((logps.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (got, got_grads), (expected, expected_grads) = grads
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert runs_piecewise(model)
    model.activation_checkpointing_enable()
    assert not runs_piecewise(model)


def test_kl_scoring_packs_a_prompts_responses_and_gives_each_ones_own_log_probability(tiny):
    """`rlaif compare`'s log π_T(y | x): the responses to one prompt share a packed row, and each
    sum equals that of its own forward pass at temperature T, whatever else is in the batch."""
    tok = load_tokenizer(tiny, padding_side="right")
    items = [("Is 3 a number?", "Yes."), ("Hi", "Hello there, how are you?"), ("Is 3 a number?", "No, 3 is a word."),
             ("Is 3 a number?", "Yes."), ("Count: " + " ".join(map(str, range(30))), "31")]
    model = load_causal_lm(tiny, "cpu")
    expected = []
    with torch.no_grad():
        for prompt, response in items:
            seq = collate([encode(tok, prompt, response, 4096, "x:1", True)], tok.pad_token_id)
            expected.append(sequence_logps(model(input_ids=seq["input_ids"]).logits / 0.7, seq["labels"]).item())
    for batch_size in (1, 2):
        assert summed_response_logps(tiny, items, temperature=0.7, batch_size=batch_size) == pytest.approx(expected, abs=1e-4, rel=1e-5)


def test_reward_scores_pack_a_prompts_responses_and_give_each_ones_own_score(tiny):
    """A reward model's scores, its responses to one prompt in a packed row (cut prompts shared
    where they agree), equal each sequence's own forward pass; so does the padded path that
    models the blocks cannot run take."""
    tok = load_tokenizer(tiny, padding_side="right")
    tok.pad_token = score_pad_token(tok)  # as a trained reward model's tokenizer has it
    model = load_reward_model(tiny, "cpu", tok.pad_token_id).eval()
    long_prompt = "Count: " + " ".join(map(str, range(40)))
    items = [("Is 3 a number?", "Yes."), ("Hi", "Hello there, how are you?"), ("Is 3 a number?", "No, 3 is a word."),
             (long_prompt, "ok"), (long_prompt, "a much longer answer, so the prompt is cut differently")]
    with torch.no_grad():
        expected = [model(input_ids=torch.tensor([encode(tok, p, r, 48, "x:1", True)["input_ids"]])).logits[0, 0].item() for p, r in items]
    heard = []
    assert (reward_scores(model, tok, items, 48, 2, lambda indices, scores, tokens: heard.extend(indices))
            == pytest.approx(expected, abs=1e-5))
    assert sorted(heard) == list(range(len(items)))
    model.activation_checkpointing_enable()
    assert not runs_piecewise(model)
    assert reward_scores(model, tok, items, 48, 2) == pytest.approx(expected, abs=1e-5)


def test_head_logps_by_hand_and_its_gradient():
    # logits W h = [log 1, log 3] for h = [1, 0]: p = [1/4, 3/4]
    weight = torch.tensor([[0.0, 1.0], [math.log(3), 2.0]], requires_grad=True)
    hidden = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 1, 1])
    got = head_logps(hidden, weight, targets, chunk_size=2)
    torch.testing.assert_close(got, torch.tensor([math.log(0.25), math.log(0.75), math.log(0.75)]))
    got.sum().backward()
    # the same gradients as the full log-softmax kept in memory
    w2, h2 = weight.detach().clone().requires_grad_(), hidden.detach().clone().requires_grad_()
    torch.log_softmax(h2 @ w2.T, -1).gather(1, targets[:, None]).sum().backward()
    torch.testing.assert_close(weight.grad, w2.grad)
    torch.testing.assert_close(hidden.grad, h2.grad)


def test_per_sequence_sums_and_means():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    sequence = torch.tensor([0, 0, 2, 2])
    assert per_sequence(values, sequence, 3).tolist() == [3.0, 0.0, 7.0]
    assert per_sequence(values, sequence, 3, average=True).tolist() == [1.5, 0.0, 3.5]


def test_local_judge_shares_prefixes_and_gives_what_each_text_alone_gives(tiny, tmp_path):
    from rlaif.judging.backends.local import LocalJudge
    from rlaif.judging.backends.prefilled import label_distribution
    from rlaif.judging.configs import load_judge_config

    (tmp_path / "judge.toml").write_text(f'backend = "local"\nmodel = "{tiny}"\n')
    judge = LocalJudge(load_judge_config(tmp_path / "judge.toml"))
    rubric = "Compare two responses.\nQuery: {q}\nResponse 1: {a}\nResponse 2: {b}\nPreferred Response="
    texts = [rubric.format(q=q, a=a, b=b) for q, x, y in [("Is 3 a number?", "yes", "no"),
                                                          ("Why is the sky blue?", "Air scatters blue light.", "It just is")]
             for a, b in ((x, y), (y, x))]
    probs, lengths = judge.label_probs(texts, ("1", "2"))
    again, _ = judge.label_probs(texts[1:], ("1", "2"))  # the cached prefix is reused
    for i, text in enumerate(texts):
        ids = judge.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            alone = label_distribution(judge.model(input_ids=ids).logits[:, -1], judge.tokenizer, ("1", "2"))[0]
        torch.testing.assert_close(torch.tensor(probs[i]), alone, atol=1e-5, rtol=1e-4)
        assert lengths[i] == ids.shape[1]
        if i:
            torch.testing.assert_close(torch.tensor(again[i - 1]), alone, atol=1e-5, rtol=1e-4)
