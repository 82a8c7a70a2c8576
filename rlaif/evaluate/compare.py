"""`rlaif compare`: policies trained by `rlaif train`, side by side with the base model they
started from, on the same evaluation prompts.

Steps, each cached in the output directory (`cache.sqlite`) so that a rerun, or one more
run, pays only for what is new, and each writing what it found to a file there:
1. generate `samples` responses per prompt from every policy and the base -> `responses.jsonl`;
2. judge each policy against the base (all pairs with `all_pairs`), debiased as `rlaif label`
   does -> `judgments.jsonl`; win rates with ties counted half, a 95% interval over prompts,
   and a length-controlled win rate;
3. score every response with a gold reward model; 4. KL to the base, length, distinct-2;
5. reference-based metrics where the evaluation rows carry a human-preferred response;
6. agreement of label runs with the humans, and reward models' accuracy on the evaluation
   pairs -> `reward_model_scores.jsonl`;
7. Bradley–Terry and Elo ratings of every policy from all the judgments (`rlaif.evaluate.ratings`).
Then `metrics.json` (every number, with the file it came from), `report.md` and PNG figures.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from tqdm import tqdm

from rlaif.errors import ConfigError, InputError
from rlaif.evaluate.ratings import game_of, ratings
from rlaif.evaluate.scoring import cached_scores, reward_model_identity, reward_model_scores, summed_response_logps
from rlaif.inputs import Example, Pair, input_name, load_examples
from rlaif.judging.base import MODE_HELP, MODES, JudgeFatalError
from rlaif.judging.configs import DEFAULT_JUDGE, reward_model_dir
from rlaif.judging.engine import JudgeSpec, JuryJudgment, PairJudgment, judge_and_rubric, judge_pairs
from rlaif.judging.generation import SAMPLING_TEMPERATURE, generate_responses
from rlaif.judging.rubric import Rubric
from rlaif.labeling.quality import label_run_report
from rlaif.models.loading import EMBEDDED_NAMES, is_embedded, load_tokenizer, model_fingerprint, resolve_model
from rlaif.settings import check_settings, required, setting
from rlaif.stats import distinct_n, length_controlled_win_rate, outcome, paired_difference, wilson_interval, win_rate
from rlaif.storage.cache import AnswerCache
from rlaif.storage.files import write_json_atomic, write_jsonl_atomic
from rlaif.storage.locks import writes_into
from rlaif.trainers.config import read_run_config
from rlaif.trainers.methods import ONLINE

BASE = "base"


@dataclass
class CompareConfig:
    """Everything a comparison depends on; the options of `rlaif compare` are generated from these fields."""

    runs: list[str] = required("`rlaif train` output directories (the policies); their common base model is compared too.", argument=True)
    eval_data: str = required("Evaluation prompts (any input `rlaif label` reads); rows with a human-preferred response "
                              "also give reference metrics.")
    output: str = required("Output directory: report.md, metrics.json, responses.jsonl, judgments.jsonl, PNG figures, cache.sqlite.")
    judge: str = setting(DEFAULT_JUDGE, "Judge of policy against base (built-in name or config file).")
    rubric: str | None = setting(None, "Built-in rubric name or path to a Jinja2 template "
                                 "[default: the judge config's `rubric`, else quality].")
    mode: str | None = setting(None, MODE_HELP, MODES)
    gold_rm: str | None = setting(None, "Gold reward model: an `rlaif train --method rm` output or any sequence classifier directory.")
    labels: list[str] = setting([], "An `rlaif label` run with human labels: agreement and confusion matrix (repeatable).")
    rms: list[str] = setting([], "A reward model to score on the evaluation pairs (repeatable).", flag="--rm")
    samples: int = setting(1, "Responses per prompt and policy.", at_least=1, flag="--num-responses", aliases=("--samples",))
    all_pairs: bool = setting(False, "Also judge every trained policy against every other.")
    limit: int | None = setting(None, "Use at most this many evaluation prompts.", at_least=1)
    max_new_tokens: int = setting(64, "Length of the policies' responses.", at_least=1)
    temperature: float = setting(SAMPLING_TEMPERATURE, "Sampling temperature of the policies.", at_least=0)
    seed: int = setting(0, "Seeds the sampling.")
    bertscore_model: str | None = setting(None, "Model for BERTScore [default: the embedded model].")
    progress: bool = True  # the CLI's --quiet turns it off

    def __post_init__(self) -> None:
        self.runs, self.labels, self.rms = list(self.runs), list(self.labels), list(self.rms)
        check_settings(self)


@dataclass
class Policy:
    name: str  # "base", or the run directory's name
    model: str | None  # what from_pretrained loads (None: the embedded model)
    trained_on: str  # in words, from the run's own train_config.json
    run: str | None = None


def labels_of(data: str, hard_labels: bool) -> str:
    """What a training file's preferences are, in words: AI labels of a judge (an `rlaif label`
    output, with its manifest beside it) or human labels."""
    manifest_path = Path(data).parent / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        rubric = (manifest["rubric"] or {}).get("name")  # None: the judge read no rubric (a reward model)
        how = f"{rubric} rubric" if rubric else manifest.get("mode", "pairwise")
        return f"AI labels ({manifest['judge']['name']} judge, {how}, {'hard' if hard_labels else 'soft'})"
    return f"human labels ({input_name(data)})"


def describe_run(run_dir: str) -> Policy:
    """A trained run as a policy, named by what it learned from (read from its train_config.json;
    for PPO and GRPO, from their rewards': a reward model's, a judge or a function)."""
    if not (Path(run_dir) / "train_config.json").exists():
        raise InputError(run_dir, None, None, "not an `rlaif train` output (no train_config.json)")
    cfg = read_run_config(run_dir)
    if cfg.method not in ONLINE:
        source = f"on {labels_of(cfg.data, cfg.hard_labels)}"
    elif cfg.reward_judge:
        source = f"against the {Path(cfg.reward_judge).stem} judge's preferences within groups"
    elif cfg.reward_function:
        source = f"against the reward function {cfg.reward_function}"
    elif (Path(rm_dir := reward_model_dir(cfg.reward_model)) / "train_config.json").exists():
        rm = read_run_config(rm_dir)
        source = f"against a reward model on {labels_of(rm.data, rm.hard_labels)}"
    else:
        source = f"against the reward model {rm_dir}"
    return Policy(Path(run_dir).name, run_dir, f"{cfg.method.upper()} {source}", run_dir)


def base_policy(runs: list[Policy]) -> Policy:
    """The model every run started from (they must share one)."""
    bases = {model_fingerprint(read_run_config(p.run).model) for p in runs}
    if len(bases) != 1:
        raise ConfigError(f"the runs start from different models ({', '.join(sorted(bases))}): compare runs of one base model")
    model = read_run_config(runs[0].run).model
    return Policy(BASE, model, f"nothing: the base model ({EMBEDDED_NAMES[0] if is_embedded(model) else model})")


# ---------------------------------------------------------------- steps


def generate(policies: list[Policy], examples: list[Example], cfg: CompareConfig, cache: AnswerCache) -> list[dict[str, Any]]:
    """`samples` responses of every policy to every prompt (cached by model, prompt and decoding)."""
    rows = []
    with tqdm(total=len(policies) * len(examples), desc="generating", disable=not cfg.progress) as bar:
        for policy in policies:
            prompts = [Example(ex.id, ex.prompt) for ex in examples]
            generate_responses(prompts, policy.model, cfg.samples, cfg.max_new_tokens, cfg.temperature, cfg.seed, cache,
                               on_done=lambda: bar.update(1))
            for ex, generated in zip(examples, prompts):
                reference = ex.responses[ex.human_best] if ex.human_best is not None else None
                for s, response in enumerate(generated.responses):
                    rows.append({"policy": policy.name, "prompt_id": ex.id, "sample": s, "prompt": ex.prompt,
                                 "response": response, "reference": reference})
    return rows


def judge_policies(policies: list[Policy], rows: list[dict[str, Any]], cfg: CompareConfig, spec: JudgeSpec, rubric: Rubric,
                   cache: AnswerCache) -> list[dict[str, Any]]:
    """Each policy against the base (and each against each with `all_pairs`), per prompt and
    sample, debiased in both orders (or each response scored alone, pointwise): one record per
    comparison with its outcome."""
    by_key = {(r["policy"], r["prompt_id"], r["sample"]): r for r in rows}
    names = [p.name for p in policies]
    matchups = [(a, BASE) for a in names if a != BASE]
    if cfg.all_pairs:
        trained = [n for n in names if n != BASE]
        matchups += [(a, b) for i, a in enumerate(trained) for b in trained[i + 1:]]
    pairs, meta = [], []
    for a, b in matchups:
        for r in rows:
            if r["policy"] == a:
                other = by_key[(b, r["prompt_id"], r["sample"])]
                pairs.append(Pair(f"{a}|{b}|{r['prompt_id']}|{r['sample']}", r["prompt"], r["response"], other["response"]))
                meta.append((a, b, r, other))
    judged = judge_pairs(pairs, spec, rubric, cache, seed=cfg.seed, progress=cfg.progress)
    records = []
    for (a, b, ra, rb), judgment in zip(meta, judged):
        record: dict[str, Any] = {"a": a, "b": b, "prompt_id": ra["prompt_id"], "sample": ra["sample"],
                                  "length_a": ra["tokens"], "length_b": rb["tokens"]}
        if isinstance(judgment, JuryJudgment):
            record["members"] = [{"judge": name, "p_a": None if m.failed else m.p_a, **_answers(m, a, b)}
                                 for name, m in zip(judgment.names, judgment.members)]
        else:
            record.update(_answers(judgment, a, b))
        if judgment.failed:
            record.update(p_a=None, consistent=None, outcome=None)
        else:
            record.update(p_a=judgment.p_a, consistent=judgment.consistent, outcome=outcome(judgment.p_a, judgment.consistent))
        records.append(record)
    return records


def _answers(judgment: PairJudgment, a: str, b: str) -> dict[str, Any]:
    """A judgment's answers as judgments.jsonl holds them: each response's score, or each order's verdict."""
    if judgment.pointwise:
        return {"scores": [{"of": a if is_a else b, "score": v.score, "text": v.text, "error": v.error} for is_a, v in judgment.answers]}
    return {"orders": [{"a_first": a_first, "p_first": v.p_first, "text": v.text, "error": v.error} for a_first, v in judgment.answers]}


def matchup_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Win rate of `a` against `b` (ties half) with its interval, and the length-controlled one."""
    done = [r for r in records if r["outcome"] is not None]
    if not done:
        raise JudgeFatalError(f"no comparison of {records[0]['a']} with {records[0]['b']} got a verdict (see judgments.jsonl); "
                              "a rerun asks the failed ones again")
    by_prompt: dict[str, list[float]] = defaultdict(list)
    for r in done:
        by_prompt[r["prompt_id"]].append(r["outcome"])
    stats = win_rate(list(by_prompt.values()))
    stats["lc_win_rate"] = length_controlled_win_rate([r["outcome"] for r in done], [r["length_a"] - r["length_b"] for r in done])
    stats.update(comparisons=len(done), failed=len(records) - len(done), mean_preference=mean(r["p_a"] for r in done))
    return stats


def rm_pair_scores(rm_dir: str, examples: list[Example], cache: AnswerCache, progress: bool = False) -> list[dict[str, Any]]:
    """A reward model's scores of the human-preferred and the other response of each evaluation pair."""
    pairs = [ex for ex in examples if ex.human_best is not None and len(ex.responses) == 2]
    items = [(ex.prompt, ex.responses[ex.human_best]) for ex in pairs] + [(ex.prompt, ex.responses[1 - ex.human_best]) for ex in pairs]
    scores = cached_scores(cache, "reward", reward_model_identity(rm_dir), items, lambda todo: reward_model_scores(rm_dir, todo, progress))
    return [{"reward_model": Path(rm_dir).name, "prompt_id": ex.id, "chosen": c, "rejected": r}
            for ex, c, r in zip(pairs, scores[:len(pairs)], scores[len(pairs):])]


def rm_accuracy(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How often a reward model scores the human-preferred response higher, with its Wilson interval."""
    if not records:
        return {"unavailable": "the evaluation rows carry no human-labeled pairs"}
    correct = sum(r["chosen"] > r["rejected"] for r in records)
    low, high = wilson_interval(correct, len(records))
    return {"accuracy": correct / len(records), "low": low, "high": high, "pairs": len(records)}


def label_agreement(run_dir: str) -> dict[str, Any]:
    """A label run's agreement with the human labels its rows carry (see `agreement_report`)."""
    report = label_run_report(run_dir)
    if not report["with_human_label"]:
        raise InputError(str(Path(run_dir) / "pairs.jsonl"), None, "human_preference", "no row carries a human label to agree with")
    return report


# ---------------------------------------------------------------- the run


@writes_into(lambda cfg, policies=None: cfg.output)
def compare(cfg: CompareConfig, policies: list[Policy] | None = None) -> dict[str, Any]:
    """Run the comparison and write its files; returns the metrics. The policies are the runs
    of `cfg.runs` and their common base, unless given (the base first, named `base`)."""
    from rlaif.evaluate.plots import write_figures
    from rlaif.evaluate.report import write_report
    from rlaif.evaluate.text_metrics import BertScore, reference_metrics

    if policies is None:
        if not cfg.runs:
            raise ConfigError("name at least one run directory to compare")
        runs = [describe_run(r) for r in cfg.runs]
        policies = [base_policy(runs), *runs]
    if len({p.name for p in policies}) != len(policies):
        raise ConfigError("two runs share a directory name; the report names policies by it")
    spec, rubric = judge_and_rubric(cfg.judge, cfg.rubric, cfg.mode)  # bad options, or a mode the judge cannot do, fail before any work
    examples = load_examples(cfg.eval_data, cfg.limit).examples
    if not examples:
        raise InputError(cfg.eval_data, None, None, "no evaluation prompts")
    # Bad label runs fail here, before any model loads.
    labels = {Path(d).name: {**label_agreement(d), "source": str(Path(d) / "pairs.jsonl")} for d in cfg.labels}
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cache = AnswerCache(out / "cache.sqlite")
    try:
        rows = generate(policies, examples, cfg, cache)
        base_tokenizer = load_tokenizer(policies[0].model)
        for r in rows:
            r["tokens"] = len(base_tokenizer(r["response"], add_special_tokens=False)["input_ids"])
        _score_kl(policies, rows, cache, cfg.temperature, cfg.progress)
        if cfg.gold_rm:
            items = [(r["prompt"], r["response"]) for r in rows]
            for r, score in zip(rows, cached_scores(cache, "reward", reward_model_identity(cfg.gold_rm), items,
                                                   lambda todo: reward_model_scores(cfg.gold_rm, todo, cfg.progress))):
                r["gold_score"] = score
        write_jsonl_atomic(out / "responses.jsonl", rows)
        records = judge_policies(policies, rows, cfg, spec, rubric, cache)
        write_jsonl_atomic(out / "judgments.jsonl", records)
        rm_records = {Path(d).name: rm_pair_scores(d, examples, cache, cfg.progress)
                      for d in ([cfg.gold_rm] if cfg.gold_rm else []) + cfg.rms}
        write_jsonl_atomic(out / "reward_model_scores.jsonl", [r for records in rm_records.values() for r in records])
    finally:
        cache.close()

    with_reference = [r for r in rows if r["reference"] is not None]
    bertscore_model = resolve_model(cfg.bertscore_model)
    bertscore = BertScore(bertscore_model) if with_reference else None
    metrics: dict[str, Any] = {
        "config": asdict(cfg),
        "decoding": {"samples": cfg.samples, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                     "top_p": 1.0, "top_k": 0, "seed": cfg.seed},
        "judge": {"name": spec.name, "rubric": rubric.name, "mode": spec.mode},
        "prompts": len(examples),
        "policies": {},
        "matchups": {},
        "labels": labels,
        "reward_models": {name: {**rm_accuracy(records), "source": "reward_model_scores.jsonl"} for name, records in rm_records.items()},
        "bertscore_model": (f"{EMBEDDED_NAMES[0] if is_embedded(cfg.bertscore_model) else cfg.bertscore_model}, "
                            f"layer {bertscore.layer}") if bertscore else None,
    }
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy.name]
        entry: dict[str, Any] = {
            "trained_on": policy.trained_on, "model": policy.model or EMBEDDED_NAMES[0], "run": policy.run, "source": "responses.jsonl",
            "mean_length": mean(r["tokens"] for r in mine),
            "distinct_2": distinct_n([r["response"] for r in mine], 2),
        }
        # per prompt, then over prompts (the unit sampled), with its standard error: at small KLs the estimate is mostly noise
        kl = paired_difference(_per_prompt(rows, policy.name, "logp"), _per_prompt(rows, policy.name, "logp_base"))
        entry["kl_to_base"], entry["kl_to_base_se"] = kl["difference"], kl["se"]
        if cfg.gold_rm:
            per_prompt = _per_prompt(rows, policy.name, "gold_score")  # its standard error over prompts, the unit sampled
            entry["gold_reward"] = mean(r["gold_score"] for r in mine)
            entry["gold_reward_se"] = stdev(per_prompt) / math.sqrt(len(per_prompt)) if len(per_prompt) > 1 else float("nan")
        refs = [r for r in mine if r["reference"] is not None]
        if refs:
            entry["reference_metrics"] = reference_metrics([r["response"] for r in refs], [r["reference"] for r in refs], bertscore)
        metrics["policies"][policy.name] = entry
    for a, b in dict.fromkeys((r["a"], r["b"]) for r in records):
        entry = {**matchup_stats([r for r in records if (r["a"], r["b"]) == (a, b)]), "source": "judgments.jsonl"}
        if cfg.gold_rm:
            entry["gold_reward_difference"] = {**paired_difference(_per_prompt(rows, a, "gold_score"),
                                                                   _per_prompt(rows, b, "gold_score")), "source": "responses.jsonl"}
        metrics["matchups"][f"{a} vs {b}"] = entry
    games = [g for line, r in enumerate(records, 1) if (g := game_of(r, "judgments.jsonl", line)) is not None]
    metrics["ratings"] = {**ratings(games, seed=cfg.seed), "source": "judgments.jsonl"}
    write_json_atomic(out / "metrics.json", metrics)
    metrics["figures"] = write_figures(out, metrics, rows)
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out, metrics)
    return metrics


def _per_prompt(rows: list[dict[str, Any]], policy: str, key: str) -> list[float]:
    """The mean of `key` over each prompt's samples, in prompt order."""
    values: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["policy"] == policy:
            values[r["prompt_id"]].append(r[key])
    return [mean(v) for v in values.values()]


def _score_kl(policies: list[Policy], rows: list[dict[str, Any]], cache: AnswerCache, temperature: float, progress: bool = False) -> None:
    """log π(y|x) of each response under its own policy and under the base (cached), both at the
    sampling temperature: the responses were drawn from those distributions, so the mean
    difference estimates the KL between them (at T ≠ 1 the untempered one would not). The base
    scores every policy's responses in one call, so a prompt's responses share its computation."""

    def logps(model: str | None, rows: list[dict[str, Any]]) -> list[float]:
        return cached_scores(cache, "logp", f"{model_fingerprint(model)}@T={temperature}", [(r["prompt"], r["response"]) for r in rows],
                             lambda todo: summed_response_logps(model, todo, temperature, progress=progress))

    for r, logp in zip(rows, logps(policies[0].model, rows)):
        r["logp_base"] = logp
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy.name]
        own = [r["logp_base"] for r in mine] if policy.name == BASE else logps(policy.model, mine)
        for r, logp in zip(mine, own):
            r["logp"] = logp
