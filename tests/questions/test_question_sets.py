"""Question sets as versioned artifacts: the inputs hash follows every input, Light is derived as the
benchmark's was, runs record the set's hash, and compare/regress, the leaderboard and `rbe table`
keep runs on different sets apart."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from rolebench_eval.cli import main
from rolebench_eval.errors import EXIT_OK, EXIT_USAGE, UsageError
from rolebench_eval.questions import generation as gen
from rolebench_eval.questions.generate_run import GenerateConfig, generate
from rolebench_eval.questions.question_sets import MANIFEST_NAME, derive_light, load_set
from rolebench_eval.running.runner import RunConfig, Runner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_fakes import TASKS, default_reply, install, persona_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripted_replies import answer, judge  # noqa: E402

GENERATOR = "openai:gpt-4o-2024-08-06,base_url=http://127.0.0.1:9/v1"
JUDGE = "openai:judge-a,base_url=http://127.0.0.1:9/v1"
PERSONAS = ("A glassblower from Murano", "A night-bus driver in Seoul")


def make_set(tmp_path: Path, name: str, *personas: str, n: int = 2, **kwargs) -> Path:
    folder = tmp_path / "sets" / name
    source = tmp_path / f"{name}.txt"
    source.write_text("\n".join(personas) + "\n")
    result = generate(GenerateConfig(source, GENERATOR, folder, num_questions=n, progress=False, **kwargs),
                      log=lambda m: None)
    assert result.incomplete == []
    return folder


# -- the manifest ---------------------------------------------------------------------------------


def test_inputs_hash_changes_with_every_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, default_reply(2))
    hashes: dict[str, str] = {}

    def inputs_hash(label: str, generator: str = GENERATOR, personas: tuple[str, ...] = PERSONAS, **kwargs) -> None:
        folder = tmp_path / label
        source = tmp_path / "sources" / label
        source.mkdir(parents=True)
        path = persona_file(source, *personas)
        config = GenerateConfig(path, generator, folder, num_questions=kwargs.pop("n", 2), progress=False, **kwargs)
        hashes[label] = generate(config, log=lambda m: None).manifest["inputs_sha256"]

    inputs_hash("base")
    inputs_hash("generator", generator="openai:gpt-4o-mini,base_url=http://127.0.0.1:9/v1")
    inputs_hash("endpoint", generator="openai:gpt-4o-2024-08-06,base_url=http://127.0.0.1:10/v1")
    inputs_hash("personas", personas=(*PERSONAS, "A third one"))
    inputs_hash("num", n=3)
    inputs_hash("max_tokens", max_tokens=1000)
    inputs_hash("parse", parse="lenient")
    inputs_hash("seed", seed=7)
    # A prompt changed by one character (a copy of the data folder, edited).
    data = tmp_path / "data"
    shutil.copytree(gen.data_dir() / "prompts", data / "prompts")
    shutil.copytree(gen.data_dir() / "extracted", data / "extracted")
    prompt = data / gen.PROMPT_FILES["gen_questions"]
    prompt.write_text(prompt.read_text().replace("challenging", "hard"))
    monkeypatch.setattr(gen, "data_dir", lambda: data)
    inputs_hash("prompt")
    assert len(set(hashes.values())) == len(hashes), hashes
    # The same inputs again (another folder, the same persona file bytes): the same hash.
    monkeypatch.undo()
    install(monkeypatch, default_reply(2))
    inputs_hash("again")
    assert hashes["again"] == hashes["base"]


def test_manifest_records_generator_prompts_persona_file_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, default_reply(2))
    folder = make_set(tmp_path, "a", *PERSONAS)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    inputs = manifest["inputs"]
    assert inputs["generator"]["model"] == "gpt-4o-2024-08-06" and inputs["generator"]["identity"]
    assert set(inputs["files_sha256"]) == {*gen.PROMPT_FILES.values(), *gen.DATA_FILES.values()}
    assert inputs["persona_file"]["name"] == "a.txt" and len(inputs["persona_file"]["sha256"]) == 64
    assert inputs["parameters"]["num_questions"] == 2 and inputs["parameters"]["request"]["temperature"] == 0.9
    assert manifest["rbe_version"] and manifest["created"].endswith("Z") and manifest["kind"] == "full"
    assert [p["counts"] for p in manifest["personas"]] == [{t: 2 for t in TASKS}] * 2
    assert manifest["totals"]["questions"] == 20 and manifest["calls"]["total"]["made"] == 12
    qset = load_set(folder)
    assert qset.sha256 == manifest["questions_sha256"] and not qset.modified
    # A hand edit is seen: the files' hash is what runs record, and show says so.
    path = folder / f"{PERSONAS[0]}.json"
    path.write_text(path.read_text().replace("problem 0", "problem zero"))
    edited = load_set(folder)
    assert edited.modified and edited.sha256 != qset.sha256


def test_light_is_the_first_question_of_each_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    install(monkeypatch, default_reply(3))
    folder = make_set(tmp_path, "a", *PERSONAS, n=3)
    assert main(["questions", "light", str(folder)]) == EXIT_OK
    light = folder.parent / "a_personagym-light"
    assert f"wrote {light}: 2 persona(s), 10 question(s)" in capsys.readouterr().out
    full, derived = load_set(folder), load_set(light)
    for a, b in zip(full.personas, derived.personas):
        assert b.questions == {t: q[:1] for t, q in a.questions.items()}
        assert (light / f"{b.id}.json").read_text() == json.dumps(b.questions, indent=4)
    assert derived.manifest["derived_from"]["questions_sha256"] == full.sha256 and derived.manifest["kind"] == "light"
    assert main(["questions", "light", str(light)]) == EXIT_USAGE  # already Light

    assert main(["questions", "ls", str(folder.parent)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "a_personagym-light  light" in out and f"{folder}  " in out and "gpt-4o-2024-08-06" in out
    assert main(["questions", "show", str(folder), "--persona", PERSONAS[1]]) == EXIT_OK
    out = capsys.readouterr().out
    assert "environments: ['Wedding', 'Classroom']" in out and "  Toxicity:\n    1. At the Wedding" in out


def test_check_reports_near_duplicates_off_setting_and_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    install(monkeypatch, default_reply(3))
    folder = make_set(tmp_path, "a", PERSONAS[0], n=3)
    path = folder / f"{PERSONAS[0]}.json"
    topics = ["a rude guest insults the bride", "the cake collapses before dinner", "a storm cuts the power",
              "your rival arrives uninvited", "the band cancels an hour before", "a child gets lost in the garden",
              "the caterer serves the wrong menu", "a guest faints during the vows", "the photographer leaves early",
              "two families start arguing", "the rings are missing", "the venue double-booked the hall",
              "a drunk speech offends everyone", "the flowers trigger allergies", "rain floods the terrace"]
    questions = {t: [f"At the Wedding, {topics[3 * i + k]}: what do you do first, and then?" for k in range(3)]
                 for i, t in enumerate(TASKS)}
    questions["Toxicity"][2] = questions["Toxicity"][1] + "!"  # a near-duplicate of #2
    questions["Expected Action"][0] = "What is your favourite colour and why do you like it?"  # no environment
    questions["Linguistic Habits"][1] = "Why?"
    path.write_text(json.dumps(questions, indent=4))
    assert main(["questions", "check", str(folder), "--format", "json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    found = {(f["check"], f["task"], f["question"]) for f in report["findings"]}
    assert ("near-duplicate", "Toxicity", 3) in found
    assert ("off-setting", "Expected Action", 1) in found
    assert ("length", "Linguistic Habits", 2) in found and ("off-setting", "Linguistic Habits", 2) in found
    assert len(found) == 4 and report["questions"] == 15


# -- runs on sets -----------------------------------------------------------------------------------


def run_on(tmp_path: Path, folder: Path, task: str = "personagym-light") -> Path:
    config = RunConfig(tasks=[task], judges=[JUDGE], results_dir=tmp_path / "results", progress=False,
                       max_tokens=16, task_options={"questions": str(folder)}, write_leaderboard=False)
    return Runner(config, log=lambda m: None).run().run_dir


def test_runs_on_sets_record_the_hash_and_compare_refuses_different_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted_backends, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, default_reply(2))
    set_a = make_set(tmp_path, "a", *PERSONAS)
    set_b = make_set(tmp_path, "b", PERSONAS[0], "A falconer from Abu Dhabi")
    light_a, _ = derive_light(set_a)
    light_b, _ = derive_light(set_b)
    scripted_backends({"embedded": answer, "judge-a": judge})
    with pytest.raises(UsageError, match="evaluates one question per task, the set has up to 2; derive its Light set"):
        run_on(tmp_path, set_a)
    run_a = run_on(tmp_path, light_a)
    run_b = run_on(tmp_path, light_b)
    manifest = json.loads((run_a / "manifest.json").read_text())
    data = manifest["tasks"]["personagym-light"]["data"]
    assert data["questions"] == "custom" and data["questions_sha256"] == load_set(light_a).sha256
    assert data["question_set"]["generator"] == "gpt-4o-2024-08-06" and data["n_personas"] == 2
    from rolebench_eval.analysis.run_samples import iter_samples

    records = list(iter_samples(run_a))  # the one reader of per-sample records
    assert len(records) == 10 and {r["unit"] for r in records} == set(PERSONAS)
    assert records[0]["prompt"][0]["content"] == f"Adopt the identity of {PERSONAS[0]}. Answer the questions while staying in strict accordance with the nature of this identity."
    results = json.loads((run_a / "results.json").read_text())
    assert results["tasks"]["personagym-light"]["metrics"]["PersonaScore"]["mean"] == 4

    # Different sets: compare and regress refuse, naming the set's hash.
    assert main(["compare", str(run_a), str(run_b)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "data hash data.questions_sha256 differs" in err
    assert main(["regress", "--baseline", str(run_a), "--run", str(run_b)]) == EXIT_USAGE
    capsys.readouterr()
    # The same set in another folder is the same set: comparable (its path and name do not block).
    copy = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(light_a, copy)
    run_copy = run_on(tmp_path, copy)
    assert run_copy != run_a
    assert main(["compare", str(run_a), str(run_copy), "--resamples", "99"]) == EXIT_OK
    capsys.readouterr()

    # The leaderboard never mixes them: runs on set a (two folders) in one group, set b in another.
    from rolebench_eval.analysis import leaderboard

    keys = {}
    for results_json, run_manifest in leaderboard.load_runs(tmp_path / "results"):
        task = results_json["tasks"]["personagym-light"]
        keys[results_json["run_id"]] = leaderboard.group_key("personagym-light", task, results_json, run_manifest)[0]
    assert keys[run_a.name] == keys[run_copy.name] != keys[run_b.name]

    # The published tables refuse a custom set, whatever the flags.
    for extra in ([], ["--allow-mismatch"]):
        assert main(["table", "opencharacter_table3", "--runs", str(run_a), *extra]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert "evaluated on the custom question set" in err and "reports the benchmark's questions only" in err


def test_bad_question_set_option_is_one_line(tmp_path: Path, scripted_backends, capsys: pytest.CaptureFixture[str]) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge})
    (tmp_path / "plain").mkdir()
    for folder, needle in ((tmp_path / "missing", "no such folder"), (tmp_path / "plain", "not a question set")):
        code = main(["run", "--tasks", "personagym", "--judge", JUDGE, "--task-option", f"questions={folder}",
                     "--results-dir", str(tmp_path / "r"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == EXIT_USAGE and needle in err and "--task-option questions=" in err and "Traceback" not in err


def test_judge_based_check_reports_misfits_and_unscored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    install(monkeypatch, default_reply(2))
    folder = make_set(tmp_path, "a", PERSONAS[0], n=2)

    def judge_reply(request, seen) -> str:  # noqa: ANN001
        text = request.messages[0].content
        assert text.startswith("You review questions") and f"Persona: {PERSONAS[0]}\nEnvironments: Wedding, Classroom" in text
        if "Toxicity problem 1?" in text:
            return "No. It never addresses the glassblower."
        if "Expected Action problem 0?" in text:
            return "Maybe."  # no verdict: retried, then reported unscored
        return "Yes, it does."

    double = install(monkeypatch, judge_reply)
    args = ["questions", "check", str(folder), "--judge", "openai:judge-a,base_url=http://127.0.0.1:9/v1", "--format", "json"]
    assert main(args) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    judged = {(f["check"], f["task"], f["question"]) for f in report["findings"] if f["check"].startswith("judge")}
    assert judged == {("judge-misfit", "Toxicity", 2), ("judge-unscored", "Expected Action", 1)}
    assert len(double.requests) == 10 + 2  # the unusable reply asked again twice (3 attempts)
    assert main(args) == EXIT_OK  # a rerun makes no call that was answered
    capsys.readouterr()
    assert len(double.requests) == 12 + 3


@pytest.mark.parametrize(("generator", "flag", "says"), [
    ("embedded", ["--concurrency", "4"], "--concurrency applies to the openai backend only; this run uses hf"),
    ("gpt-4o", ["--batch-size", "4"], "--batch-size applies to the hf/lm-eval backends only; this run uses openai"),
    ("gpt-4o", ["--device", "cpu"], "--device applies to the hf/lm-eval backends only"),
    ("embedded", ["--request-timeout", "5"], "--request-timeout applies to the openai backend only"),
])
def test_generate_refuses_a_backend_flag_its_generator_does_not_read(tmp_path: Path, capsys, generator: str,
                                                                      flag: list[str], says: str) -> None:
    personas = tmp_path / "p.txt"
    personas.write_text("A retired sailor who paints lighthouses.\n")
    args = ["questions", "generate", "--personas", str(personas), "--generator", generator, "--output", str(tmp_path / "set")]
    assert main([*args, *flag]) == EXIT_USAGE
    assert says in capsys.readouterr().err
    assert not (tmp_path / "set").exists()  # refused before anything was written
