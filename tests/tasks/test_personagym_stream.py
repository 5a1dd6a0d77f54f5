"""PersonaGym's record stream: the records `finish` gives, batch by batch, keeping no call text."""

from __future__ import annotations

import json

import pytest

from rolebench_eval.analysis.judge_reliability import reliability
from rolebench_eval.requests import Completion
from rolebench_eval.task_api import MODEL_ROLE, JudgeSpec, ModelCall, RunSettings, finish_from_stream
from rolebench_eval.task_registry import build_task, discover
from tasks.personagym import outcome

EXAMPLES_REPLY = 'Score 1: Response - "a"\nScore 2: Response - "b"\nScore 3: Response - "c"\nScore 4: Response - "d"\nScore 5: Response - "e"'


def respond(call: ModelCall) -> Completion:
    if call.model == MODEL_ROLE:
        return Completion(text="In character: " + call.request.messages[-1].content[:20])
    if call.stage == "score_examples":
        return Completion(text=EXAMPLES_REPLY)
    n = call.request.messages[-1].content.count("Score Examples")
    return Completion(text=" ".join(f"({k}) Evaluation: fine. Therefore, the final score is {1 + k % 5}" for k in range(1, max(n, 1) + 1)))


@pytest.mark.parametrize(("protocol", "policy"), [("personagym", "exclude"), ("opencharacter", "exclude"),
                                                  ("personagym", "reference-zero")])
def test_personagym_stream_keeps_no_call_text_and_gives_finish_s_records_and_results(protocol: str, policy: str) -> None:
    task = build_task(discover().tasks["personagym"], RunSettings(limit=2, protocol=protocol, unscored_policy=policy,
                                                                  judges=(JudgeSpec("j1"), JudgeSpec("j2"))))
    samples = task.samples()
    stream = task.record_stream(samples)
    values = []
    for job in task.jobs(samples):
        calls = next(job)
        try:
            while True:
                calls = job.send([respond(c) for c in calls])
        except StopIteration as stop:
            values.append(stop.value)
    # Added last job first: the records of each job do not depend on the jobs before it.
    added = {k: stream.add(k, v) for k, v in reversed(list(enumerate(values)))}
    streamed = [r for k in range(len(values)) for r in added[k]]
    closed = stream.close()
    # The results from the kept (slim) records equal those from the full records.
    labels = ["j1", "j2"]
    full = outcome.task_results(streamed, stream.reference_batches, labels, policy, task.metric_names())
    assert json.dumps(closed.results, sort_keys=True) == json.dumps(full, sort_keys=True)
    assert reliability(closed.records) == reliability(streamed) and reliability(streamed) is not None
    scored = sum(r["score"] is not None for r in streamed)
    assert closed.results["items"]["n"] == len(samples) == 100 and closed.results["items"]["n_scored"] == scored > 50
    assert [r["sample_id"] for r in streamed] == [s.sample_id for s in samples]
    assert [r["judgments"][0]["batch"] for r in streamed][:6] == ([0, 0, 0, 0, 0, 1] if protocol == "personagym" else [0, 1, 2, 3, 4, 5])
    assert [k["answer_chars"] for k in closed.records] == [len(r["answer"]) for r in streamed]
    for kept in closed.records:  # what the run holds per sample while it streams
        assert "prompt" not in kept and "judge_prompt" not in kept
        assert set(kept["score_examples"]) <= {"error", "unusable_reason", "substituted_error_text"}
        assert all("reply" not in j for j in kept["judgments"])
        assert "answer" not in kept  # its length is what the length bias reads
    assert finish_from_stream(task.record_stream(samples), values).records == streamed


def test_jobs_are_built_as_they_are_taken_not_all_up_front() -> None:
    import gc
    import types

    task = build_task(discover().tasks["personagym"], RunSettings(limit=3, judges=(JudgeSpec("j1"),)))
    samples = task.samples()

    def live_batch_jobs() -> int:
        gc.collect()
        # type(), not isinstance(): the latter reads __class__, which a lazy module attribute can warn on.
        return sum(1 for o in gc.get_objects() if type(o) is types.GeneratorType and o.gi_code.co_name == "batch_job")

    before = live_batch_jobs()
    jobs = task.jobs(samples)
    assert len(jobs) == len(task.batches(samples)) > 20 and live_batch_jobs() == before
    taken = [jobs[0], jobs[-1]]
    assert live_batch_jobs() == before + 2
    assert next(taken[0])[0].request == task.generation_request(samples[0])  # the first batch's first question
    with pytest.raises(IndexError):
        jobs[len(jobs)]
