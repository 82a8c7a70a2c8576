"""Example reward functions for `rlaif train --method ppo|grpo --reward-function examples/rewards.py:NAME`.

A reward function takes the prompts and the sampled responses (two lists of the same length)
and returns one number per response.
"""


def concise(prompts: list, responses: list[str]) -> list[float]:
    """Rewards answers of 5 to 40 words, and less the further a response is from that."""
    scores = []
    for response in responses:
        words = len(response.split())
        scores.append(1.0 if 5 <= words <= 40 else -abs(words - 22) / 22)
    return scores
