"""Reference-based metrics against the human-preferred response, each through its well-kept library, all in
[0, 1]: ROUGE-1/2/L/Lsum F1 (rouge-score), corpus BLEU-1…4 (sacrebleu), METEOR (nltk; needs
its WordNet data) and BERTScore F1 (bert-score, with a model on the machine).

A metric that cannot run here is reported as unavailable, with the reason, never as a number.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean
from typing import Any

BERTSCORE_LAYER_SHARE = 2 / 3  # which hidden layer BERTScore reads, as a share of the model's depth


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F1 over (prediction, reference) pairs."""
    from rouge_score import rouge_scorer

    kinds = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    scorer = rouge_scorer.RougeScorer(list(kinds))
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {kind: mean(s[kind].fmeasure for s in scores) for kind in kinds}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1 … BLEU-4 (BLEU-n: geometric mean of 1…n-gram precisions, brevity penalty)."""
    from sacrebleu.metrics import BLEU

    refs = [list(references)]
    return {f"bleu{n}": BLEU(max_ngram_order=n).corpus_score(list(predictions), refs).score / 100 for n in (1, 2, 3, 4)}


def meteor(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean METEOR (nltk). Raises LookupError when nltk's WordNet data is not installed."""
    import nltk
    from nltk.translate.meteor_score import meteor_score

    nltk.data.find("corpora/wordnet")  # LookupError here, before any scoring
    return mean(meteor_score([ref.split()], pred.split()) for pred, ref in zip(predictions, references, strict=True))


class BertScore:
    """BERTScore F1 with any transformers model directory (loaded once)."""

    def __init__(self, model_dir: str):
        from bert_score import BERTScorer
        from transformers import AutoConfig

        layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
        self.layer = max(1, round(layers * BERTSCORE_LAYER_SHARE))
        self.scorer = BERTScorer(model_type=model_dir, num_layers=self.layer, batch_size=16)
        # bert-score pads to the tokenizer's model_max_length, which some tokenizers leave unset (1e30).
        self.scorer._tokenizer.model_max_length = min(self.scorer._tokenizer.model_max_length, 2048)

    def __call__(self, predictions: Sequence[str], references: Sequence[str]) -> float:
        _, _, f1 = self.scorer.score(list(predictions), list(references))
        return f1.mean().item()


def reference_metrics(predictions: Sequence[str], references: Sequence[str], bertscore: BertScore | None) -> dict[str, Any]:
    """Every metric of the table for one policy; one that cannot run is {"unavailable": why}."""
    out: dict[str, Any] = {**rouge(predictions, references), **bleu(predictions, references)}
    try:
        out["meteor"] = meteor(predictions, references)
    except LookupError:
        out["meteor"] = {"unavailable": "nltk's WordNet data is not on this machine (python -m nltk.downloader wordnet)"}
    out["bertscore"] = bertscore(predictions, references) if bertscore else {"unavailable": "no BERTScore model"}
    return out
