"""The call store keeps where each answer is, not its text (issue 13), and reads it back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message, Usage
from rolebench_eval.running.call_store import CallStore, _key_and_completion


def request(text: str) -> ChatRequest:
    return ChatRequest((Message("user", text),), GenerationParams(max_tokens=8))


# Texts that look like the line's own field names, quotes, escapes and non-ASCII.
TRICKY = ['say "completion": {"text": 1}}', 'a "key": "x" line \\ with \n newlines', "ünïcödé ✓ \u2028 done"]


def test_answers_are_read_back_from_their_lines_and_not_kept_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    store = CallStore(path)
    for n, text in enumerate(TRICKY):
        store.append(f"k{n}", "m", "s", request(f"q{n}"), Completion(text=text, finish_reason="stop", usage=Usage(3, n)))
    store.append("bad", "m", "s", request("q"), Completion.failure("HTTP 500"))
    # Positions, not texts: the index holds numbers only (answer_index.py), one per answered key.
    assert len(store) == 3 and all(isinstance(n, int) for k in ('k0', 'k1', 'k2') for n in store._answers.candidates(k)[0])
    for n, text in enumerate(TRICKY):  # while the file is still open for appending
        assert store.answer(f"k{n}") == Completion(text=text, finish_reason="stop", usage=Usage(3, n))
    store.close()
    again = CallStore(path)
    assert [again.answer(f"k{n}").text for n in range(3)] == TRICKY
    assert again.answer("bad") is None and again.failure("bad").error == "HTTP 500"
    again.append("k9", "m", "s", request("q9"), Completion(text="late"))
    assert again.answer("k9").text == "late" and again.answer("k0").text == TRICKY[0]


def test_the_fast_read_agrees_with_decoding_the_whole_line_for_every_layout(tmp_path: Path) -> None:
    completion = Completion(text=TRICKY[0], finish_reason="stop").to_json()
    ours = json.dumps({"schema": 1, "key": "k", "request": {"messages": []}, "completion": completion}) + "\n"
    other_order = json.dumps({"completion": completion, "schema": 1, "key": "k", "request": {}}) + "\n"
    for line in (ours, other_order):
        assert _key_and_completion(line.encode()) == ("k", completion)


def test_a_sibling_run_s_answer_is_copied_line_for_line(tmp_path: Path) -> None:
    other = CallStore(tmp_path / "other" / "calls" / "judging.jsonl")
    other.append("k", "m", "s", request("q"), Completion(text=TRICKY[1]))
    other.close()
    mine = CallStore(tmp_path / "mine" / "calls" / "judging.jsonl", [other.path])
    assert mine.answer("k").text == TRICKY[1] and mine.reused_from == {"other"}
    mine.close()
    assert (tmp_path / "mine" / "calls" / "judging.jsonl").read_bytes() == other.path.read_bytes()
    assert CallStore(tmp_path / "mine" / "calls" / "judging.jsonl").answer("k").text == TRICKY[1]


def test_a_file_changed_under_the_run_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    store = CallStore(path)
    store.append("k", "m", "s", request("q"), Completion(text="yes"))
    store.close()
    reading = CallStore(path)
    path.write_text(path.read_text().replace('"key": "k"', '"key": "z"'))
    with pytest.raises(RunDirectoryError, match="changed while this run used it"):
        reading.answer("k")


def test_the_index_reads_a_calls_file_only_as_far_as_needed_and_finds_a_later_line(tmp_path: Path) -> None:
    from rolebench_eval.running.call_index import CallIndex
    from rolebench_eval.running.call_refs import text_sha

    store = CallStore(tmp_path / "calls" / "judging.jsonl")
    store.append("k1", "m", "s", request("q1"), Completion(text="first try", error="unusable reply: no verdict"))
    for n in range(3000):
        store.append(f"f{n}", "m", "s", request(f"filler {n}"), Completion(text="x"))
    store.append("k1", "m", "s", request("q1"), Completion(text="second try"))
    store.close()
    index = CallIndex(tmp_path)
    assert index.resolve({"$call": "k1", "file": "judging", "part": "prompt"}) == [{"content": "q1", "role": "user"}]
    assert "f2999" not in index._scan_of("judging").positions  # stopped after the first line of k1
    reply = {"$call": "k1", "file": "judging", "part": "reply", "sha": text_sha("second try")}
    assert index.resolve(reply) == "second try"  # on a later line: the rest of the file was read
    assert index.resolve({**reply, "sha": text_sha("first try")}) == "first try"
    with pytest.raises(RunDirectoryError, match="holds no reply with hash"):
        index.resolve({**reply, "sha": text_sha("never")})
    with pytest.raises(RunDirectoryError, match="is missing"):
        index.resolve({"$call": "nope", "file": "judging", "part": "prompt"})
    index.close()
