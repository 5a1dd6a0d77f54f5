"""FixedFields: a sample's fields without a dict each, read like the dict they replace."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from rolebench_eval.task_api import FixedFields


class Two(FixedFields):
    __slots__ = ("a", "b")


def test_reads_like_a_dict_of_its_keys() -> None:
    fields = Two(a=1, b="x")
    assert fields == {"a": 1, "b": "x"} and dict(fields) == {"a": 1, "b": "x"}
    assert {**fields, "c": 2} == {"a": 1, "b": "x", "c": 2}
    assert list(fields.items()) == [("a", 1), ("b", "x")] and len(fields) == 2
    assert fields.get("missing") is None and "a" in fields and "missing" not in fields
    assert json.dumps(dict(fields)) == '{"a": 1, "b": "x"}' and repr(fields) == "{'a': 1, 'b': 'x'}"
    with pytest.raises(KeyError):
        fields["missing"]
    with pytest.raises(AttributeError):
        fields.a = 2
    with pytest.raises(TypeError, match="exactly the fields a, b"):
        Two(a=1)
    assert copy.deepcopy(fields) == fields and copy.copy(fields) == fields
    again = pickle.loads(pickle.dumps(fields))
    assert type(again) is Two and again == fields


def test_personagym_samples_keep_their_fields() -> None:
    from rolebench_eval.task_api import JudgeSpec, RunSettings
    from rolebench_eval.task_registry import build_task, discover

    task = build_task(discover().tasks["personagym"], RunSettings(limit=1, judges=(JudgeSpec("j"),)))
    first = task.samples()[0]
    assert isinstance(first.fields, FixedFields) and type(first.fields).__name__ == "QuestionFields"
    assert set(first.fields) == {"persona", "persona_index", "category", "metric", "question_index", "question"}
    assert first.fields["metric"] == "EA" and first.fields["question_index"] == 0 and first.unit == first.fields["persona"]
