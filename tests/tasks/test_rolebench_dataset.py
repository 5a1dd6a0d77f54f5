"""RoleBench loading: layout, item ids, quirks, missing and malformed files, hub fetch offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rolebench_eval.errors import DataError, UsageError
from rolebench_eval.requests import Message
from rolebench_eval.tasks.rolebench import data_source, dataset, prompts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rolebench"
FULL = FIXTURES / "full"


def _baseline_row(path: Path, question: str) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["question"] == question:
            return str(row["generated"][0])
    raise AssertionError(question)


def test_zh_split_loads_every_metric_and_joins_raw_and_baseline() -> None:
    split = dataset.load_split("zh", FULL)
    assert split.language == "zh"
    assert [len(split.metrics[m].items) for m in ("SPE", "CUS", "RAW")] == [3, 3, 2]
    assert split.not_computable() == {}
    raw = split.metrics["RAW"]
    cus = split.metrics["CUS"]
    # RAW reuses the CUS item ids (one generation, two scores); the third question has no
    # original answer and is reported, not dropped silently.
    assert [i.item_id for i in raw.items] == [i.item_id for i in cus.items[:2]]
    assert raw.items[0].references == ("合成的原始答案一（测试用）。",)
    assert raw.items[1].references == ("合成的原始答案二（测试用）。",)  # whitespace-insensitive join
    assert raw.unmatched_item_ids == (cus.items[2].item_id,)
    # Baseline files are in reverse order in the fixture: pairing is by (role, question).
    for item in split.metrics["SPE"].items + cus.items:
        answer = split.baseline_answer(item)
        assert answer is not None and answer not in item.references
    first_cus = cus.items[0]
    assert split.baseline_answer(first_cus) == _baseline_row(
        FULL / "rolebench-zh/general/rolegpt_baseline.jsonl", first_cus.question
    )
    assert split.description("孙悟空") == "合成描述：齐天大圣（测试用）。"
    assert split.description("皇帝") is None


def test_items_keep_question_text_and_normalise_type() -> None:
    split = dataset.load_split("zh", FULL)
    spe = split.metrics["SPE"].items[0]
    assert spe.question.startswith(" 皇上，您对后宫宫廷斗争中的生死打杀") and spe.question.endswith("？ ")
    assert spe.type == ("script_based",)  # list in the file
    assert split.metrics["CUS"].items[0].type == ()  # absent in the file
    rolegen = dataset.load_split("en-rolegen", FULL)
    assert rolegen.metrics["SPE"].items[0].type == ("script_based",)  # string in the file
    assert dataset.normalise_type(None) == ()
    assert dataset.normalise_type("a") == ("a",)
    assert dataset.normalise_type(["a", "b"]) == ("a", "b")
    with pytest.raises(DataError, match="type"):
        dataset.normalise_type(3, where="f:1")


def test_item_ids_are_stable_and_distinct_for_whitespace_duplicates() -> None:
    first = dataset.load_split("en", FULL)
    second = dataset.load_split("en", FULL)
    items = first.metrics["SPE"].items
    assert [i.item_id for i in items] == [i.item_id for i in second.metrics["SPE"].items]
    assert len({i.item_id for i in items}) == 4
    # Rows 2 and 3 differ only by a trailing space: both kept, question text untouched.
    dup = [i for i in items if i.role == "James Carter"]
    assert [i.question.endswith("? ") for i in dup] == [False, True]
    assert dup[0].references != dup[1].references
    assert any("1 (role, question) pairs" in note for note in first.notes)
    expected = dataset.make_item_id(
        "en", "rolebench-eng/instruction-generalization/role_specific/test.jsonl",
        dup[0].role, dup[0].question, dup[0].line,
    )
    assert dup[0].item_id == expected and dup[0].line == 2


def test_baseline_match_policies_differ_only_on_duplicates() -> None:
    last = dataset.load_split("en", FULL)
    exact = dataset.load_split("en", FULL, baseline_match="exact-then-normalised")
    dup = [i for i in last.metrics["SPE"].items if i.role == "James Carter"]
    # normalised-last: both duplicates get the later baseline row (the one with the space).
    assert last.baseline_answer(dup[0]) == last.baseline_answer(dup[1])
    assert last.baseline_answer(dup[0]).startswith("Let me tell you, partner.")
    assert exact.baseline_answer(dup[0]).startswith("Well, let me tell you something, partner.")
    assert exact.baseline_answer(dup[1]).startswith("Let me tell you, partner.")
    with pytest.raises(UsageError, match="baseline match policy"):
        dataset.load_split("en", FULL, baseline_match="row-order")


def test_missing_files_name_the_metric_and_paths() -> None:
    split = dataset.load_split("zh", FIXTURES / "partial")
    assert split.metrics["SPE"].computable and len(split.metrics["SPE"].items) == 2
    missing = split.not_computable()
    assert set(missing) == {"CUS", "RAW"}
    root = FIXTURES / "partial"
    assert missing["CUS"] == (str(root / "rolebench-zh/general/test.jsonl"),)
    assert missing["RAW"] == (
        str(root / "rolebench-zh/general/test.jsonl"),
        str(root / "instructions-zh/instructions-general.jsonl"),
    )
    assert split.baselines["role_specific"].missing_files == (
        str(root / "rolebench-zh/role_specific/rolegpt_baseline.jsonl"),
    )
    assert split.baseline_answer(split.metrics["SPE"].items[0]) is None
    assert split.descriptions is None
    assert split.descriptions_missing == (str(root / "profiles-zh/desc.json"),)


def test_malformed_line_raises_with_file_and_line() -> None:
    with pytest.raises(DataError, match=r"role_specific/test\.jsonl:3: malformed JSON"):
        dataset.load_split("zh", FIXTURES / "malformed")


def test_bad_rows_and_bad_raw_file(tmp_path: Path) -> None:
    bad = tmp_path / "rolebench-zh" / "role_specific" / "test.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"role": "皇帝", "question": "q", "generated": []}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.jsonl:1: field 'generated'"):
        dataset.load_split("zh", tmp_path)
    raw = tmp_path / "raw.jsonl"
    raw.write_text('{"instruction": "q", "response": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"raw\.jsonl:1: expected an 'instruction'.*found fields"):
        dataset.load_raw_answers(raw)
    raw.write_text('{"instruction": "Add", "input": "1 2", "target": "3"}\n', encoding="utf-8")
    assert dataset.load_raw_answers(raw) == {"Add": ("3",), "Add 1 2": ("3",)}


def test_root_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data_source.ENV_VAR, raising=False)
    assert data_source.resolve_root() == data_source.SHIPPED_ROOT
    monkeypatch.setenv(data_source.ENV_VAR, str(FULL))
    assert data_source.resolve_root() == FULL
    assert data_source.resolve_root(FIXTURES / "partial") == FIXTURES / "partial"
    with pytest.raises(DataError, match="does not exist"):
        data_source.resolve_root(tmp_path / "nope")
    with pytest.raises(UsageError, match="Did you mean 'zh'"):
        dataset.load_split("zhh", FULL)


def test_shipped_copy_is_complete_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data_source.ENV_VAR, raising=False)
    en = dataset.load_split("en")
    assert len(en.metrics["SPE"].items) == 4750
    assert set(en.not_computable()) == {"CUS", "RAW"}
    assert len(en.baselines["role_specific"].answers) == 4750
    for name in ("NOTICE.md", "LICENSE", "PROVENANCE.md"):
        assert (data_source.SHIPPED_ROOT / name).is_file()


def test_hub_fetch_fails_clearly_offline(tmp_path: Path) -> None:
    # A subprocess: huggingface_hub reads HF_HUB_OFFLINE once, at import.
    code = textwrap.dedent(
        f"""
        from rolebench_eval.errors import DataError
        from rolebench_eval.tasks.rolebench.data_source import fetch_from_hub
        try:
            fetch_from_hub(cache_dir={str(tmp_path / "cache")!r})
        except DataError as error:
            print("DataError:", error)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "DataError: could not fetch dataset 'ZenMoore/RoleBench'" in result.stdout, result.stderr
    assert "RBE_ROLEBENCH_DIR" in result.stdout


# The prompt module is small; its byte-level checks live with the data they are built from.
EN_PROMPT = (
    "You are Jack Sparrow, your description is: A pirate. Now please answer some questions to "
    "accurately show your personality traits! Your speaking style should fully imitate the "
    "personality role assigned to you! Please do not expose that you are an artificial "
    "intelligence model or a language model, you must always remember that you are only assigned "
    "one personality role. Don\u2019t be verbose or too formal or polite when speaking."
)
ZH_PROMPT = (
    "你是孙悟空，你的特征描述是：齐天大圣。现在请你回答我的一些问题，以准确展现你的人格特征！"
    "你的说话风格要全面模仿被赋予的人格角色！请不要暴露你是人工智能模型或者语言模型，"
    "你要时刻记住你只被赋予的一个人格角色。说话不要嗦，也不要太过于正式或礼貌。"
)


def test_role_prompts_are_byte_exact() -> None:
    messages, warning = prompts.build_role_messages("Jack Sparrow", " Q? ", "A pirate")
    assert warning is None
    assert messages == (Message("system", EN_PROMPT), Message("user", " Q? "))
    assert "\u2019".encode() == b"\xe2\x80\x99" and "\u2019" in messages[0].content
    zh, _ = prompts.build_role_messages("孙悟空", "你好", "齐天大圣", template="rolellm-zh")
    assert zh[0].content == ZH_PROMPT
    assert zh[0].content.encode("utf-8") == ZH_PROMPT.encode("utf-8")


def test_missing_description_policies_warn_and_are_named() -> None:
    messages, warning = prompts.build_role_messages("Jack Sparrow", "Q", None)
    assert messages[0].content == EN_PROMPT.replace(", your description is: A pirate.", ".")
    assert warning is not None and "'omit-clause'" in warning and "Jack Sparrow" in warning
    messages, warning = prompts.build_role_messages(
        "Jack Sparrow", "Q", None, missing_description="empty-description"
    )
    assert messages[0].content == EN_PROMPT.replace("A pirate", "")
    assert warning is not None and "'empty-description'" in warning
    zh, _ = prompts.build_role_messages("孙悟空", "Q", None, template="rolellm-zh")
    assert zh[0].content == ZH_PROMPT.replace("，你的特征描述是：齐天大圣。", "。")
    # A description holding a placeholder stays literal.
    braces, _ = prompts.build_role_messages("X", "Q", "{role_name} {0}")
    assert "your description is: {role_name} {0}." in braces[0].content
    with pytest.raises(UsageError):
        prompts.build_role_messages("X", "Q", None, template="rolellm-fr")
