"""Question generation: the reference's requests byte for byte, its parsing and retry rules, and
what is better than the reference (every attempt stored, short tasks reported, --strict, no crash)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rolebench_eval.errors import EXIT_INCOMPLETE, EXIT_OK, UsageError
from rolebench_eval.questions import generation as gen
from rolebench_eval.questions.generate_run import GenerateConfig, generate
from rolebench_eval.questions.persona_files import Persona
from rolebench_eval.questions.question_sets import MANIFEST_NAME, load_set
from rolebench_eval.requests import ChatRequest, Completion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_fakes import TASKS, default_reply, good_questions, install, persona_file, task_of  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "tasks" / "personagym" / "data"
PERSONA = "A 62-year-old beekeeper from Ljubljana who quotes Slovenian proverbs"
GENERATOR = "openai:gpt-4o-2024-05-13,base_url=http://127.0.0.1:9/v1"


# -- requests: built here from the reference's own f-strings, not from the builder ---------------


def reference_select_settings(persona: str, settings_list: list) -> str:
    # code/run.py select_settings at 536f705, the f-string verbatim (its indentation is sent too).
    return f'''
                        Given the following persona description, select the most relevant settings from the given settings options for the persona. Your output must only be the selected settings in a python list format with no other verbose.
                        Persona: {persona}
                        Settings: {settings_list}
                        Selected Settings:
                      '''


def reference_gen_questions(persona: str, settings: list, task: str, description: str, num_questions: int) -> str:
    # code/run.py gen_questions at 536f705, the f-string verbatim (note the space after "Questions:").
    return f'''
                            You are tasked with determining if a person with the given persona description is able to answer questions related to {settings} that specifically test the given evaluation task. Generate exactly {num_questions} challenging multi-step questions to do this where the questions are intended to be asked directly to the persona. You may use the question description below to guide you. Your output must be the generated questions in a python list format with no other verbose.
                            Persona: {persona}
                            Settings: {settings}
                            Evaluation Task: {task}
                            Questions Description: {description}
                            Questions: 
                      '''


def test_requests_are_byte_identical_to_the_reference() -> None:
    settings_list = json.loads((DATA / "extracted/settings_list.json").read_text())
    requirements = json.loads((DATA / "extracted/question_requirements.json").read_text())
    inputs = gen.GenerationInputs.load()
    params = gen.reference_params()
    select = gen.settings_request(inputs, PERSONA, params)
    assert select.messages_json() == [{"role": "user", "content": reference_select_settings(PERSONA, settings_list)}]
    assert select.params.to_json() == {"temperature": 0.9, "top_p": 0.9, "max_tokens": 3000, "seed": None, "stop": []}
    chosen = ["Beach Party", "Farmers Market", "Wedding"]
    for task in TASKS:
        request = gen.questions_request(inputs, PERSONA, chosen, task, 10, params)
        expected = reference_gen_questions(PERSONA, chosen, task, requirements[task], 10)
        assert request.messages_json() == [{"role": "user", "content": expected}]
        assert request.params == params
    assert inputs.tasks == TASKS  # the data's order, the reference's loop order


def test_the_job_sends_those_requests_in_the_reference_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    double = install(monkeypatch, default_reply(10, settings="['Wedding', 'Farmers Market']"))
    result = generate(GenerateConfig(persona_file(tmp_path, PERSONA), GENERATOR, tmp_path / "set", progress=False),
                      log=lambda m: None)
    assert result.incomplete == [] and result.problems == []
    settings_list = json.loads((DATA / "extracted/settings_list.json").read_text())
    requirements = json.loads((DATA / "extracted/question_requirements.json").read_text())
    sent = [r.messages[0].content for r in double.requests]
    assert sent[0] == reference_select_settings(PERSONA, settings_list)
    assert sent[1:] == [reference_gen_questions(PERSONA, ["Wedding", "Farmers Market"], t, requirements[t], 10)
                        for t in TASKS]
    # Saved as the reference's save_questions does: json.dump(questions, indent=4).
    (path,) = [p for p in (tmp_path / "set").glob("*.json") if p.name != MANIFEST_NAME]
    questions = {t: json.loads(good_questions(t, 10).strip("`python\n").replace("'", '"')) for t in TASKS}
    assert path.read_text() == json.dumps(questions, indent=4) and path.name == f"{PERSONA}.json"


# -- replies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```python\n['a', 'b']\n```", ["a", "b"]),
        ("  ['a', \"b\"]  \n", ["a", "b"]),
        ("```\n['a']\n```", ["a"]),
        ("Here are the questions: ['a']", None),
        ("['a', 'b'", None),
        ("('a', 'b')", None),
        ("[1, 2]", None),
        ("Error", None),  # what the reference's run_model returns after 3 failed API calls
    ],
)
def test_fenced_and_malformed_replies(text: str, expected: list | None) -> None:
    assert gen.parse_strings(text)[0] == expected


def test_lenient_parsing_is_opt_in() -> None:
    assert gen.parse_lenient("1. Why?\n2) How?\n- And?") == (["Why?", "How?", "And?"], None)
    assert gen.parse_lenient("Wedding, Beach Party , Courtroom")[0] == ["Wedding", "Beach Party", "Courtroom"]
    assert gen.parse_lenient("Sure:\nWhat if, at dawn, you lose the key?\nWho helps?")[0] == [
        "What if, at dawn, you lose the key?", "Who helps?"]
    assert gen.parse_strings("1. Why?\n2. How?")[0] is None


def drive(job, replies):  # noqa: ANN001, ANN201 - a test driver standing in for the scheduler
    """Answer the job's calls from `replies(call, attempt)`, applying each call's check as the
    scheduler does (a reply failing it comes back failed, with its text kept)."""
    count: dict[str, int] = {}
    calls = next(job)
    try:
        while True:
            completions = []
            for call in calls:
                key = call.request.cache_key("x")
                count[key] = count.get(key, 0) + 1
                text = replies(call.request, count[key])
                if text is None:
                    completions.append(Completion.failure("HTTP 500 after 6 attempts"))
                    continue
                reason = call.check(text) if call.check else None
                error = None if reason is None else f"unusable reply: {reason} (after 1 attempt(s))"
                completions.append(Completion(text=text, error=error))
            calls = job.send(completions)
    except StopIteration as stop:
        return stop.value


def test_short_and_unparseable_replies_are_retried_and_the_last_parsed_list_is_kept() -> None:
    inputs = gen.GenerationInputs.load()
    persona = Persona("p", PERSONA, None, 1)

    def replies(request: ChatRequest, attempt: int) -> str | None:
        task = task_of(request)
        if task is None:  # environments: unparseable first (the reference would have raised)
            return "Sure! Wedding and Classroom" if attempt == 1 else "['Wedding']"
        if task == "Expected Action":  # 3 items, then garbage 4 times: the 3 are used
            return repr(["q1", "q2", "q3"]) if attempt == 1 else "no list here"
        if task == "Toxicity":  # right on the third attempt
            return repr(["a"] * 2) if attempt < 3 else repr([f"t{i}" for i in range(4)])
        if task == "Linguistic Habits":  # never parses: no questions, reported (the reference crashes)
            return "I cannot do that"
        if task == "Persona Consistency":
            return None  # the call fails outright: not retried by the job, reported
        return repr([f"j{i}" for i in range(4)])

    result = drive(gen.persona_job(inputs, persona, 4, gen.reference_params()), replies)
    assert result["settings"] == ["Wedding"] and result["attempts"]["select_settings"] == 2
    assert result["questions"]["Expected Action"] == ["q1", "q2", "q3"]
    assert result["attempts"]["Expected Action"] == 5
    assert result["questions"]["Toxicity"] == ["t0", "t1", "t2", "t3"] and result["attempts"]["Toxicity"] == 3
    assert result["questions"]["Linguistic Habits"] == [] and result["attempts"]["Linguistic Habits"] == 5
    assert result["questions"]["Persona Consistency"] == [] and result["attempts"]["Persona Consistency"] == 1
    assert result["attempts"]["Action Justification"] == 1
    assert result["problems"] == [
        "Expected Action: 3 question(s), expected 4, after 5 attempt(s) (questions: the reply is not a Python list literal)",
        "Linguistic Habits: 0 question(s), expected 4, after 5 attempt(s) (questions: the reply is not a Python list literal)",
        "Persona Consistency: 0 question(s), expected 4, after 1 attempt(s) (call failed: HTTP 500 after 6 attempts)",
    ]


def test_every_attempt_is_a_stored_call_and_strict_refuses_a_short_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    def reply(request: ChatRequest, seen: int) -> str:
        task = task_of(request)
        if task is None:
            return "['Wedding']"
        return good_questions(task, 2 if task == "Toxicity" else 3)  # Toxicity always one short

    double = install(monkeypatch, reply)
    from rolebench_eval.cli import main

    args = ["questions", "generate", "--personas", str(persona_file(tmp_path, PERSONA)), "--generator", GENERATOR,
            "--num-questions", "3", "--output", str(tmp_path / "set"), "--no-progress"]
    assert main([*args, "--strict"]) == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "--strict: 1 problem(s); the set was not written" in err
    assert not (tmp_path / "set" / MANIFEST_NAME).exists()
    calls = [json.loads(line) for line in (tmp_path / "set" / "calls.jsonl").read_text().splitlines()]
    toxicity = [c for c in calls if "Evaluation Task: Toxicity\n" in c["request"]["messages"][0]["content"]]
    assert len(toxicity) == 5 and all(c["completion"]["error"].startswith("unusable reply: questions: 2 question(s), expected 3")
                                      for c in toxicity)
    assert all(c["completion"]["text"] for c in toxicity)  # the replies themselves are kept
    assert len(double.requests) == 1 + 4 + 5

    # Without --strict the short task is reported and the set written; the good calls are reused.
    assert main(args) == EXIT_OK
    out = capsys.readouterr().out
    assert "short or failed: " + PERSONA + ": Toxicity: 2 question(s), expected 3, after 5 attempt(s)" in out
    assert "model calls made: 5; reused from the set's calls: 5" in out  # Toxicity asked again, 5 times
    qset = load_set(tmp_path / "set")
    assert [len(qset.personas[0].questions[t]) for t in TASKS] == [3, 2, 3, 3, 3]
    entry = qset.manifest["personas"][0]
    assert entry["short"] == ["Toxicity"] and entry["counts"]["Toxicity"] == 2 and qset.manifest["complete"] is False


def test_a_failed_environment_selection_is_reported_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, lambda request, seen: "no list" if task_of(request) is None else good_questions("x", 2))
    result = generate(GenerateConfig(persona_file(tmp_path, PERSONA, "A tailor"), GENERATOR, tmp_path / "set",
                                     num_questions=2, progress=False), log=lambda m: None)
    assert len(result.incomplete) == 2 and "environment selection: no usable reply in 5 attempt(s)" in result.incomplete[0]
    assert result.manifest["totals"]["failed_personas"] == [PERSONA, "A tailor"]
    with pytest.raises(UsageError, match="the set has no persona with questions"):
        load_set(tmp_path / "set")


def test_output_folder_of_other_inputs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, default_reply(2))
    path = persona_file(tmp_path, PERSONA)
    generate(GenerateConfig(path, GENERATOR, tmp_path / "set", num_questions=2, progress=False), log=lambda m: None)
    with pytest.raises(UsageError, match="holds a question set generated from other inputs"):
        generate(GenerateConfig(path, GENERATOR, tmp_path / "set", num_questions=3, progress=False), log=lambda m: None)
