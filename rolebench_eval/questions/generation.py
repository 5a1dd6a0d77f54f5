"""PersonaGym's question generation for one persona, as a Job: the reference's requests, byte for byte.

Reference (vsamuel2003/PersonaGym, code/run.py at 536f705; the protocol text is in the project's
docs, "Question generation, exactly as the reference code does it"):
- environment selection: one user message, `select_settings.txt` with `{persona}` and
  `{settings_list}` (the repr of the 150 environments); the reply parsed by `extract_list`;
- then per task, in the data's task order: `gen_questions.txt` with `{settings}` (the repr of the
  list the first call returned), `{num_questions}`, `{persona}`, `{task}`, `{description}`; up to
  5 attempts, stopping at the first reply that parses to exactly N items; else the last list that
  parsed is used whatever its length;
- both at temperature 0.9, top_p 0.9, max_tokens 3000, penalties 0 (the API's defaults: not sent).

Where the reference fails, this is better: an unparseable environment reply is asked again too
(the reference raised), every attempt is a call of its own in the call store (text, reason,
tokens), a failed call or a task with fewer than N questions is reported, nothing crashes. Retries
are the job's own (the scheduler runs with one content attempt per call) so that every attempt's
reply is kept and the reference's "last list that parsed" rule can be applied exactly.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rolebench_eval.errors import DataError
from rolebench_eval.questions.persona_files import Persona
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.task_api import Job, ModelCall

GENERATOR_ROLE = "generator"
SETTINGS_STAGE = "select_settings"
QUESTIONS_STAGE = "gen_questions"
ATTEMPTS = 5  # the reference's `for _ in range(5)` around each task's questions
REFERENCE_MAX_TOKENS = 3000
REFERENCE_MODEL = "gpt-4o-2024-05-13"  # SETTINGS_MODEL and QUESTION_MODEL of the reference
PROMPT_FILES = {
    SETTINGS_STAGE: "prompts/question_generation/select_settings.txt",
    QUESTIONS_STAGE: "prompts/question_generation/gen_questions.txt",
}
DATA_FILES = {
    "settings_list": "extracted/settings_list.json",
    "question_requirements": "extracted/question_requirements.json",
    "tasks": "extracted/tasks.json",
}
UNUSABLE = "unusable reply: "  # the scheduler's prefix of a reply that failed its check


def data_dir() -> Path:
    """The PersonaGym task's data folder (prompts, environments, requirements; MIT, see LICENSE)."""
    import rolebench_eval.tasks.personagym as personagym

    return Path(personagym.__file__).parent / "data"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class GenerationInputs:
    """The prompts and data the requests are built from, with the hashes of their files."""

    select_prompt: str
    questions_prompt: str
    settings_list: list[str]
    requirements: dict[str, str]
    tasks: list[str]
    file_hashes: dict[str, str]

    @staticmethod
    def load(folder: Path | None = None) -> GenerationInputs:
        folder = folder or data_dir()
        raw: dict[str, bytes] = {}
        for relative in (*PROMPT_FILES.values(), *DATA_FILES.values()):
            try:
                raw[relative] = (folder / relative).read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read PersonaGym data file {folder / relative}: {exc.strerror or exc}") from exc
        try:
            data = {key: json.loads(raw[path].decode("utf-8")) for key, path in DATA_FILES.items()}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"PersonaGym data in {folder} is not valid JSON: {exc}") from exc
        return GenerationInputs(
            select_prompt=raw[PROMPT_FILES[SETTINGS_STAGE]].decode("utf-8"),
            questions_prompt=raw[PROMPT_FILES[QUESTIONS_STAGE]].decode("utf-8"),
            settings_list=list(data["settings_list"]),
            requirements=dict(data["question_requirements"]),
            tasks=list(data["tasks"]),
            file_hashes={path: _sha256(content) for path, content in sorted(raw.items())},
        )


def reference_params(max_tokens: int | None = None) -> GenerationParams:
    """`run_model`'s defaults; no seed is sent (the reference sends none)."""
    return GenerationParams(temperature=0.9, top_p=0.9, max_tokens=max_tokens or REFERENCE_MAX_TOKENS)


def settings_request(inputs: GenerationInputs, persona: str, params: GenerationParams) -> ChatRequest:
    # str.format renders a list argument with str(), as the reference's f-string does.
    text = inputs.select_prompt.format(persona=persona, settings_list=inputs.settings_list)
    return ChatRequest((Message("user", text),), params)


def questions_request(inputs: GenerationInputs, persona: str, settings: Any, task: str, num_questions: int,
                      params: GenerationParams) -> ChatRequest:
    text = inputs.questions_prompt.format(settings=settings, num_questions=num_questions, persona=persona,
                                          task=task, description=inputs.requirements[task])
    return ChatRequest((Message("user", text),), params)


# -- replies -----------------------------------------------------------------------------------


def extract_list(text: str) -> Any:
    """The reference's `extract_list`: drop the ```python and ``` fences, strip, literal_eval."""
    return ast.literal_eval(text.replace("```python", "").replace("```", "").strip())


def parse_strings(text: str | None) -> tuple[list[str] | None, str | None]:
    """(the list of strings a reply holds, None) or (None, why it holds none)."""
    if text is None:
        return None, "no reply"
    try:
        value = extract_list(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None, "the reply is not a Python list literal"
    if not isinstance(value, list):
        return None, f"the reply is a Python {type(value).__name__}, not a list"
    if not all(isinstance(item, str) and item.strip() for item in value):
        return None, "the reply's list holds something other than non-empty strings"
    return value, None


_ITEM = re.compile(r"^(?:\d+[.)]|[-*\u2022])\s+(.+)$")


def parse_lenient(text: str | None) -> tuple[list[str] | None, str | None]:
    """parse_strings, else numbered or bulleted lines, else lines ending in '?', else one comma-separated line.

    Not the reference's rule (`--parse lenient`, recorded): for small local generators that write
    lists as prose (the embedded smoke model never writes a Python literal)."""
    value, reason = parse_strings(text)
    if value is not None or text is None:
        return value, reason
    lines = [line.strip() for line in text.replace("```python", "").replace("```", "").splitlines() if line.strip()]
    items = [m.group(1) for m in (_ITEM.match(line) for line in lines) if m]
    if not items:
        items = [line for line in lines if line.endswith("?")]  # one question per line
    if not items and len(lines) == 1:
        items = lines[0].split(",")
    items = [item.strip().strip("\"'").strip() for item in items]
    items = [item for item in items if item]
    if items:
        return items, None
    return None, f"{reason}, nor numbered or bulleted items, lines ending in '?' or one comma-separated line"


Parser = Callable[[str | None], tuple[list[str] | None, str | None]]
PARSERS: dict[str, Parser] = {"reference": parse_strings, "lenient": parse_lenient}
PARSER_RULES = {
    "reference": "extract_list: the reply without ```python/``` fences, stripped, ast.literal_eval; a list of strings",
    "lenient": "extract_list, else numbered or bulleted lines, else lines ending in '?', else one comma-separated "
               "line (not the reference's rule)",
}


def settings_check_with(parse: Parser) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        value, reason = parse(text)
        if reason is not None:
            return f"environments: {reason}"
        return "environments: the list is empty" if not value else None

    return check


settings_check = settings_check_with(parse_strings)


def questions_check(num_questions: int, parse: Parser = parse_strings) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        value, reason = parse(text)
        if reason is not None:
            return f"questions: {reason}"
        assert value is not None
        if len(value) != num_questions:
            return f"questions: {len(value)} question(s), expected {num_questions}"
        return None

    return check


def _failure(reply: Completion) -> str | None:
    """Why a call failed outright (transport, budget), or None: its reply came back."""
    if reply.ok or (reply.error or "").startswith(UNUSABLE):
        return None
    return reply.error or "no reply"


# -- the job -----------------------------------------------------------------------------------


def _attempt_params(params: GenerationParams, seed: int | None, attempt: int) -> GenerationParams:
    # With --seed, attempt k sends seed+k-1: reproducible, and a retry is not the same sample again.
    return params if seed is None else replace(params, seed=seed + attempt - 1)


def persona_job(inputs: GenerationInputs, persona: Persona, num_questions: int, params: GenerationParams,
                attempts: int = ATTEMPTS, parse: Parser = parse_strings, seed: int | None = None) -> Job:
    """Environments, then the five tasks' questions (in parallel), each retried as the reference does.

    Returns the persona's entry of the set: settings, {task: [questions]}, attempts per call, and
    what went wrong (failed calls, short tasks), never raising for a bad reply.
    """
    result: dict[str, Any] = {"id": persona.id, "persona": persona.text, "name": persona.name,
                              "line": persona.line, "settings": None, "questions": {}, "attempts": {},
                              "problems": []}
    check_settings = settings_check_with(parse)
    settings: list[str] | None = None
    for attempt in range(1, attempts + 1):
        request = settings_request(inputs, persona.text, _attempt_params(params, seed, attempt))
        (reply,) = yield [ModelCall(GENERATOR_ROLE, SETTINGS_STAGE, request, check=check_settings)]
        result["attempts"][SETTINGS_STAGE] = attempt
        failed = _failure(reply)
        if failed is not None:
            result["problems"].append(f"environment selection failed: {failed}")
            return result
        if reply.ok:
            settings, _ = parse(reply.text)
            break
    if settings is None:
        result["problems"].append(f"environment selection: no usable reply in {attempts} attempt(s) "
                                  f"({check_settings(reply.text or '')})")
        return result
    result["settings"] = settings
    pending = list(inputs.tasks)
    check = questions_check(num_questions, parse)
    last_parsed: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for attempt in range(1, attempts + 1):
        if not pending:
            break
        tasks = list(pending)
        attempt_params = _attempt_params(params, seed, attempt)
        replies = yield [
            ModelCall(GENERATOR_ROLE, QUESTIONS_STAGE,
                      questions_request(inputs, persona.text, settings, t, num_questions, attempt_params), check=check)
            for t in tasks
        ]
        for task, reply in zip(tasks, replies):
            result["attempts"][task] = attempt
            failed = _failure(reply)
            parsed, _ = parse(reply.text)
            if parsed is not None:
                last_parsed[task] = parsed
            if reply.ok or failed is not None:
                pending.remove(task)
                if failed is not None:
                    reasons[task] = f"call failed: {failed}"
            else:
                reasons[task] = check(reply.text or "") or ""
    for task in inputs.tasks:
        questions = last_parsed.get(task, [])
        result["questions"][task] = questions
        if len(questions) != num_questions:
            why = reasons.get(task) or "no usable reply"
            result["problems"].append(
                f"{task}: {len(questions)} question(s), expected {num_questions}, after "
                f"{result['attempts'].get(task, 0)} attempt(s) ({why})"
            )
    return result
