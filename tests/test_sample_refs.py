"""samples.jsonl refers to its calls for every text they hold (issue 13), and `iter_samples` gives
back exactly the records the old code wrote with every text inline."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import sample_refs_fixture as fixture  # noqa: E402
from rolebench_eval.analysis.run_samples import iter_samples
from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running.call_refs import CALL, SAMPLES_SCHEMA


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    patch = pytest.MonkeyPatch()
    fixture.install(patch.setattr)
    try:
        return fixture.scripted_run(tmp_path_factory.mktemp("refs") / "results")
    finally:
        patch.undo()


def _refs(value: object) -> list[dict]:
    if isinstance(value, dict):
        return [value] if CALL in value else [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _stored(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def test_iter_samples_gives_the_records_the_old_code_wrote_field_by_field(runs: list[Path]) -> None:
    old = [json.loads(line) for line in gzip.open(fixture.FIXTURE, "rt", encoding="utf-8")]
    new = [record for run in runs for record in iter_samples(run)]
    assert [r["sample_id"] for r in new] == [r["sample_id"] for r in old] and len(old) == 112
    for before, after in zip(old, new):
        assert before["schema"] == 1 and after["schema"] == SAMPLES_SCHEMA
        for name, value in before.items():
            if name != "schema":
                assert after[name] == value, (before["sample_id"], name)
    # The fixture covers what must survive: batched examples, two judges, an unusable judge reply
    # kept with its text, empty answers, and RoleBench's per-order judge prompts and replies.
    judge_b = [j for r in new if r["task"] == "personagym" for j in r["judgments"] if j["judge"] == "judge-b"]
    assert any(j["reply"] == "I would rather not grade these." for j in judge_b)
    assert any(r.get("empty_answer") for r in new)
    rolebench = [r for r in new if r["task"] == "rolebench-en"]
    assert rolebench[0]["judgments"][0]["prompt"][0]["role"] == "system"


def test_samples_store_each_call_text_once_and_are_smaller_than_the_calls(runs: list[Path]) -> None:
    personagym = runs[0]
    records = _stored(personagym)
    refs = [ref for r in records for ref in _refs(r)]
    # prompt, examples prompt / reply / processed, judge prompt, and each of 2 judges' replies.
    assert {(r["file"], r["part"], r.get("derive")) for r in refs} == {
        ("generation", "prompt", None), ("judging", "prompt", None), ("judging", "reply", None),
        ("judging", "reply", "personagym_examples"),
    }
    assert all(isinstance(r["judge_prompt"], dict) and CALL in r["judge_prompt"] for r in records if r["judgments"])
    assert records[0]["answer"].startswith("In character [")  # the sample's own text stays inline
    samples = (personagym / "samples.jsonl").stat().st_size
    calls = sum((personagym / name).stat().st_size for name in ("calls/generation.jsonl", "calls/judging.jsonl"))
    resolved = sum(len(json.dumps(r, ensure_ascii=False)) + 1 for r in iter_samples(personagym))
    assert samples < calls / 3 and samples < resolved / 4


def test_a_reply_is_read_from_the_line_it_was_built_from(runs: list[Path], tmp_path: Path) -> None:
    # A later line for the same key (a --fresh run killed before rewriting samples.jsonl) must not
    # change what an existing record says: the reference names the hash of its reply.
    run = tmp_path / "run"
    _copy(runs[1], run)
    judging = run / "calls" / "judging.jsonl"
    first = json.loads(judging.read_text(encoding="utf-8").splitlines()[0])
    first["completion"]["text"] = "a different reply, appended later"
    with judging.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(first) + "\n")
    assert list(iter_samples(run)) == list(iter_samples(runs[1]))


def test_a_missing_call_is_a_one_line_error_naming_file_line_and_field(runs: list[Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    _copy(runs[1], run)
    (run / "calls" / "generation.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(RunDirectoryError) as caught:
        list(iter_samples(run))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{run / 'samples.jsonl'}:1: field prompt: call ")
    assert "calls/generation.jsonl is missing" in message
    # A reply whose text was changed in place is refused the same way.
    _copy(runs[1], run)
    judging = run / "calls" / "judging.jsonl"
    lines = judging.read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[0])
    entry["completion"]["text"] += " (edited)"
    judging.write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(RunDirectoryError, match=r"samples.jsonl:\d+: field score_examples\.reply: call .* holds no reply with hash"):
        list(iter_samples(run))


def test_schema_1_records_are_read_as_they_are(tmp_path: Path) -> None:
    run = tmp_path / "old-run"
    run.mkdir()
    old = [json.loads(line) for line in gzip.open(fixture.FIXTURE, "rt", encoding="utf-8")][:3]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old), encoding="utf-8")
    assert list(iter_samples(run)) == old


def _copy(source: Path, target: Path) -> None:
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)


def test_calls_files_are_read_line_by_line_and_a_cut_last_line_is_dropped(tmp_path: Path) -> None:
    from rolebench_eval.requests import ChatRequest, Completion, Message
    from rolebench_eval.running.call_store import CallStore

    path = tmp_path / "calls" / "judging.jsonl"
    store = CallStore(path)
    request = ChatRequest((Message("user", "Grüße\u2028aus Köln"),))  # U+2028 is no line break in JSONL
    store.append("k1", "judge", "stage", request, Completion(text="réponse\u2028suite"))
    store.append("k2", "judge", "stage", request, Completion(text="zweite Antwort: ü"))
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex("ü".encode()) + 1])  # killed inside the last line's "ü"
    again = CallStore(path)
    assert again.answer("k1").text == "réponse\u2028suite" and again.answer("k2") is None
    assert again.dropped_partial_line and path.read_bytes() == data[: data.index(b"\n") + 1]


def test_the_run_page_embeds_a_batch_s_judge_prompt_once(runs: list[Path]) -> None:
    from rolebench_eval.analysis.html_report import render_run_html

    records = list(iter_samples(runs[0]))
    prompts = [json.dumps(r["judge_prompt"]) for r in records if r["judge_prompt"]]
    html = render_run_html(runs[0])
    assert len(set(prompts)) < len(prompts)  # batches of 5 share a prompt
    assert html.count("the same judge prompt as") == len(prompts) - len(set(prompts))
    marker = "You are given several rubrics to evaluate persona responses below"
    assert all(marker in p for p in prompts) and html.count(marker) == len(set(prompts))
