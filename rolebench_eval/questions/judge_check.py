"""The optional judge-based quality check (`rbe questions check DIR --judge SPEC`).

One greedy call per question asks a judge whether the question is addressed to its persona and set
in one of the environments selected for it; "no" is a finding (`judge-misfit`) with the judge's
reason, a reply without a yes/no verdict (after the runner's content retries) is reported as
`judge-unscored`, never counted as either. This prompt is rbe's own, not PersonaGym's. The calls
go into the set's folder (`check-calls.jsonl`), so a rerun makes none again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.questions.checks import Finding
from rolebench_eval.questions.question_sets import QuestionSet
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.task_api import Job, ModelCall

CHECK_ROLE = "judge:check"
CALLS_NAME = "check-calls.jsonl"
CONTENT_ATTEMPTS = 3  # as rbe run's judges
FIT_PROMPT = (
    "You review questions written to evaluate a role-playing persona.\n\n"
    "Persona: {persona}\nEnvironments: {settings}\nQuestion: {question}\n\n"
    "Is this question addressed to this persona, and set in one of these environments? "
    "Answer with one word, yes or no, then one sentence saying why."
)
FIT_PARAMS = GenerationParams(temperature=0.0, top_p=None, max_tokens=96)
_VERDICT = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def verdict(text: str) -> str | None:
    match = _VERDICT.match(text or "")
    return match.group(1).lower() if match else None


def fit_check(text: str) -> str | None:
    return None if verdict(text) else "no yes/no verdict at the start of the reply"


def fit_request(persona: str, settings: list[str], question: str, max_tokens: int | None = None) -> ChatRequest:
    params = FIT_PARAMS if max_tokens is None else GenerationParams(temperature=0.0, max_tokens=max_tokens)
    text = FIT_PROMPT.format(persona=persona, settings=", ".join(settings) or "(none recorded)", question=question)
    return ChatRequest((Message("user", text),), params)


def _job(request: ChatRequest) -> Job:
    (reply,) = yield [ModelCall(CHECK_ROLE, "question_fit", request, check=fit_check)]
    return reply


def judge_findings(qset: QuestionSet, judge: str, *, base_url: str | None = None,
                   options: BackendOptions | None = None, max_tokens: int | None = None,
                   log: Callable[[str], None] = lambda m: None) -> tuple[list[Finding], dict[str, Any]]:
    from rolebench_eval.models import spec_identity
    from rolebench_eval.questions.model_calls import identified_spec, run_role_jobs
    from rolebench_eval.running.call_store import CallStore
    from rolebench_eval.running.run_lock import RunLock

    options = options or BackendOptions()
    spec = identified_spec(judge, base_url, [])
    entries = {e["id"]: e for e in qset.manifest.get("personas") or []}
    where: list[tuple[str, str, int]] = []
    jobs: list[Job] = []
    for persona in qset.personas:
        settings = list(entries.get(persona.id, {}).get("settings") or [])
        for task, questions in persona.questions.items():
            for number, question in enumerate(questions, start=1):
                where.append((persona.id, task, number))
                jobs.append(_job(fit_request(persona.persona, settings, question, max_tokens)))
    with RunLock(qset.path, log=log):
        ran = run_role_jobs(CHECK_ROLE, spec, spec_identity(spec, options), CallStore(qset.path / CALLS_NAME), jobs,
                            options=options, content_attempts=CONTENT_ATTEMPTS, log=log)
    findings = []
    for (persona_id, task, number), reply in zip(where, ran.values):
        assert isinstance(reply, Completion)
        said = verdict(reply.text or "") if reply.ok else None
        if said == "no":
            reason = " ".join((reply.text or "").split())[:160]
            findings.append(Finding("judge-misfit", persona_id, task, number, f"{spec.label}: {reason}"))
        elif said is None:
            findings.append(Finding("judge-unscored", persona_id, task, number, reply.error or "no verdict"))
    return findings, ran.calls
