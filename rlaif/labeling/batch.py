"""`rlaif label --batch-api`: the calls a run still needs, submitted to the OpenAI Batch API,
and collected on a later run."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from rlaif.judging.base import BATCH_ENDED, JudgeFatalError, JudgeRequest, Verdict
from rlaif.judging.engine import JudgeSpec
from rlaif.storage.cache import AnswerCache
from rlaif.storage.files import write_json_atomic


def batch_round(out: Path, spec: JudgeSpec, requests: dict[str, JudgeRequest], cache: AnswerCache) -> dict[str, Any] | None:
    """One step of a Batch API run: collect a finished batch, or submit the calls still missing.

    The batch id is kept in `<output>/batch.json` between runs. Before a batch is asked for,
    that file holds a random tag that the batch carries in its metadata, so a run killed
    before it heard the batch id finds the batch on the next run instead of paying twice.
    Returns the batch's state while one is pending (the run stops there), or None once
    every answer is in.
    """
    judge = spec.load()
    answers: dict[str, Verdict] = {}
    state_path = out / "batch.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state is not None and "batch_id" not in state:
        found = judge.find_batch(state["tag"], since=state["asked_at"] - 300)  # 5 min of clock skew
        state = None if found is None else {**state, **found}
        if state is None:
            state_path.unlink()
        else:
            write_json_atomic(state_path, state)
    if state is not None:
        status, verdicts = judge.poll_batch(state["batch_id"], requests)
        for key, verdict in verdicts.items():
            answers[key] = verdict
            if not verdict.transient:
                cache.put(key, verdict.to_dict())
        if status not in BATCH_ENDED:
            return {**state, "status": status}
        state_path.unlink()
        if not verdicts:
            raise JudgeFatalError(f"batch {state['batch_id']} ended as '{status}' with no results; the next run submits a new one")
    # Answers that failed in the batch are asked again, in a new batch.
    missing = {key: r for key, r in requests.items() if key not in answers or answers[key].transient}
    if not missing:
        return None
    for key in missing:
        answers.pop(key, None)
    asking = {"tag": uuid.uuid4().hex, "asked_at": time.time(), "requests": len(missing)}
    write_json_atomic(state_path, asking)
    state = {**asking, **judge.submit_batch(missing, asking["tag"])}
    write_json_atomic(state_path, state)
    return state
