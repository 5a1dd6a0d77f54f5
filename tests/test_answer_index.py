"""The call store's index keeps a few bytes per call (issue 13) and still never loses or confuses
an answer: across merges, on a 64-bit prefix collision, on a key stored twice, after a reload."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.running.answer_index import AnswerIndex, key_prefix
from rolebench_eval.running.call_store import CallStore
from rolebench_eval.running.fresh_calls import FreshCallStore


def sha(n: int) -> str:
    return hashlib.sha256(f"call {n}".encode()).hexdigest()


def request(text: str) -> ChatRequest:
    return ChatRequest((Message("user", text),), GenerationParams(max_tokens=8))


# Two distinct 64-hex keys sharing their first 16 hex digits: the arrays cannot tell them apart.
TWIN_A = "0123456789abcdef" + "a" * 48
TWIN_B = "0123456789abcdef" + "b" * 48


def test_get_set_and_len_over_many_keys_across_several_merges() -> None:
    index = AnswerIndex(buffer=64)
    for n in range(1000):  # 15 merges, and a part-full buffer at the end
        index.set(sha(n), (n * 100, n + 1))
    assert len(index) == 1000 and len(index._recent) == 1000 % 64 and len(index._prefixes) == 1000 - 1000 % 64
    assert all(index.candidates(sha(n)) == [(n * 100, n + 1)] for n in range(1000))
    assert index.candidates(sha(5000)) == [] and index.candidates("not hex at all") == []
    assert list(index._prefixes) == sorted(index._prefixes)  # searchsorted needs it
    assert index.nbytes() == (1000 - 1000 % 64) * 20  # 8 + 8 + 4 bytes a merged entry


def test_a_prefix_collision_gives_every_candidate_newest_first_and_loses_none() -> None:
    assert key_prefix(TWIN_A) == key_prefix(TWIN_B) == 0x0123456789ABCDEF
    index = AnswerIndex(buffer=2)
    index.set(TWIN_A, (0, 10))
    index.set(TWIN_B, (10, 20))  # the buffer fills: both merged, same prefix
    assert len(index) == 2 and index.candidates(TWIN_A) == [(10, 20), (0, 10)] == index.candidates(TWIN_B)


def test_a_key_set_again_returns_its_newest_position_in_the_buffer_and_in_the_arrays() -> None:
    index = AnswerIndex(buffer=3)
    index.set(sha(1), (0, 5))
    index.set(sha(1), (5, 6))  # still in the buffer: overwritten
    assert index.candidates(sha(1)) == [(5, 6)] and len(index) == 1
    index.set(sha(2), (11, 1))
    index.set(sha(3), (12, 1))  # merged
    index.set(sha(1), (13, 7), replaces=(5, 6))  # overwritten in the arrays, still one entry
    assert index.candidates(sha(1)) == [(13, 7)] and len(index) == 3 and len(index._prefixes) == 3
    index.set(sha(2), (20, 2))  # no `replaces`: kept twice, the newer first
    assert index.candidates(sha(2)) == [(20, 2), (11, 1)]


def test_colliding_keys_each_get_their_own_answer_through_the_store_and_after_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    store = CallStore(path)
    store._answers = AnswerIndex(buffer=2)  # merge at once, so the collision is in the arrays
    store.append(TWIN_A, "m", "s", request("a"), Completion(text="answer A"))
    store.append(TWIN_B, "m", "s", request("b"), Completion(text="answer B"))
    store.append(sha(1), "m", "s", request("c"), Completion(text="answer C"))
    assert len(store._answers._prefixes) == 2  # the twins are merged, under one prefix
    assert (store.answer(TWIN_A).text, store.answer(TWIN_B).text, store.answer(sha(1)).text) == ("answer A", "answer B", "answer C")
    twin_c = "0123456789abcdef" + "c" * 48  # same prefix, never stored: a miss, not an error
    assert store.answer(twin_c) is None and len(store) == 3
    store.close()
    again = CallStore(path)  # the default buffer: the twins stay in the dict, then collide on merge
    assert (again.answer(TWIN_A).text, again.answer(TWIN_B).text, again.answer(twin_c)) == ("answer A", "answer B", None)
    again._answers._merge()
    assert (again.answer(TWIN_A).text, again.answer(TWIN_B).text, again.answer(twin_c)) == ("answer A", "answer B", None)


def test_a_duplicate_line_in_the_file_the_later_wins_and_counts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "calls.jsonl"
    store = CallStore(path)
    store._answers = AnswerIndex(buffer=2)
    store.append(sha(1), "m", "s", request("q"), Completion(text="first"))
    store.append(sha(2), "m", "s", request("r"), Completion(text="other"))  # merged
    store.append(sha(1), "m", "s", request("q"), Completion(text="second"))  # what --fresh does
    assert store.answer(sha(1)).text == "second" and len(store) == 2
    store.append(TWIN_A, "m", "s", request("a"), Completion(text="A"))
    store.append(sha(3), "m", "s", request("f"), Completion.failure("HTTP 500"))  # no answer: not counted
    store.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 5
    for buffer in (2, 4096):  # reloaded: the duplicate resolved in the arrays, then in the dict
        monkeypatch.setattr(AnswerIndex, "BUFFER", buffer)
        again = CallStore(path)
        assert [again.answer(sha(n)).text if again.answer(sha(n)) else None for n in (1, 2, 3)] == ["second", "other", None]
        assert again.answer(TWIN_A).text == "A" and len(again) == 3 and again.failure(sha(3)).error == "HTTP 500"


def test_a_failure_line_after_an_answer_does_not_hide_it(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    store = CallStore(path)
    store.append(sha(1), "m", "s", request("q"), Completion(text="kept"))
    store.append(sha(1), "m", "s", request("q"), Completion.failure("HTTP 500"))
    store.close()
    again = CallStore(path)
    assert again.answer(sha(1)).text == "kept" and again.failure(sha(1)) is None


def test_a_fresh_store_appends_over_old_answers_and_keeps_one_entry_per_key(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    store = CallStore(path)
    for n in range(5):
        store.append(sha(n), "m", "s", request(f"q{n}"), Completion(text=f"old {n}"))
    store.close()
    fresh = FreshCallStore(path)
    assert fresh.answer(sha(0)) is None
    for n in range(5):
        fresh.append(sha(n), "m", "s", request(f"q{n}"), Completion(text=f"new {n}"))
    assert len(fresh) == 5 and fresh.answer(sha(4)).text == "new 4"
    fresh.close()
    assert [CallStore(path).answer(sha(n)).text for n in range(5)] == [f"new {n}" for n in range(5)]
