"""ColumnRecords: records kept in columns read back equal to the dicts that were added."""

from __future__ import annotations

import pytest

from rolebench_eval.record_columns import ColumnRecords

RECORDS = [
    {"id": "a", "score": 4.5, "examples": {"error": None, "why": "x"},
     "judgments": [{"judge": "j1", "score": 4}, {"judge": "j2", "score": 5, "extra": "dropped"}]},
    {"id": "b", "score": None, "examples": None, "judgments": []},
    {"id": "c", "examples": {"why": "only this key"}, "judgments": [{"judge": "j1"}], "not kept": 1},
    {"id": "d", "score": True, "examples": True},  # values that look like markers stay values
]
EXPECTED = [
    {"id": "a", "score": 4.5, "examples": {"error": None, "why": "x"},
     "judgments": [{"judge": "j1", "score": 4}, {"judge": "j2", "score": 5}]},
    {"id": "b", "score": None, "examples": None, "judgments": []},
    {"id": "c", "examples": {"why": "only this key"}, "judgments": [{"judge": "j1"}]},
    {"id": "d", "score": True, "examples": True},
]


def columns() -> ColumnRecords:
    kept = ColumnRecords(("id", "score", "examples"), nested={"examples": ("error", "why")},
                         listed={"judgments": ("judge", "score")})
    kept.extend(RECORDS)
    return kept


def test_records_read_back_as_added_less_the_fields_not_kept() -> None:
    kept = columns()
    assert len(kept) == 4
    assert list(kept) == EXPECTED
    assert [kept[i] for i in range(4)] == EXPECTED and kept[-1] == EXPECTED[-1] and kept[1:3] == EXPECTED[1:3]
    assert list(kept)[0]["examples"] is not RECORDS[0]["examples"]  # built on reading: no dict is held
    with pytest.raises(IndexError):
        kept[4]


def test_reordered_keeps_every_record_in_the_new_order() -> None:
    assert list(columns().reordered([3, 1, 0, 2])) == [EXPECTED[3], EXPECTED[1], EXPECTED[0], EXPECTED[2]]


def test_sorted_by_keys_is_stable() -> None:
    assert [r["id"] for r in columns().sorted_by([1, 0, 1, 0])] == ["b", "d", "a", "c"]
