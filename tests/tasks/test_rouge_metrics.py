"""ROUGE-L F: hand-computed values, tokenizer and reference policies, and the check figures."""

from __future__ import annotations

import pytest

from rolebench_eval.errors import UsageError
from rolebench_eval.tasks.rolebench import data_source, dataset
from rolebench_eval.tasks.rolebench import rouge_metrics as rouge


def f_measure(lcs: int, answer_len: int, reference_len: int) -> float:
    precision, recall = lcs / answer_len, lcs / reference_len
    return 2 * precision * recall / (precision + recall)


def test_english_hand_computed() -> None:
    # default tokenizer lower-cases and splits on non-alphanumerics:
    # answer    "the cat sat on the mat"   -> 6 tokens
    # reference "The cat is on the mat!"   -> the cat is on the mat (6 tokens)
    # LCS = the cat on the mat = 5 -> P = R = 5/6 -> F = 5/6
    assert rouge.rouge_l("the cat sat on the mat", ["The cat is on the mat!"], language="en") == (
        pytest.approx(5 / 6, abs=1e-12)
    )
    # answer "a b c d" vs reference "b d e": LCS "b d" = 2, P = 2/4, R = 2/3 -> F = 4/7
    assert rouge.rouge_l("a b c d", ["b d e"], language="en") == pytest.approx(4 / 7, abs=1e-12)
    assert rouge.rouge_l("nothing", ["else entirely"], language="en") == 0.0


def test_chinese_per_character_hand_computed() -> None:
    # char: every non-space character is a token, punctuation included.
    # answer    "俺老孙去也！" -> 俺 老 孙 去 也 ！ (6)
    # reference "老孙去了。"   -> 老 孙 去 了 。 (5)
    # LCS = 老 孙 去 = 3 -> P = 3/6, R = 3/5 -> F = 6/11
    assert rouge.rouge_l("俺老孙去也！", ["老孙去了。"], language="zh") == pytest.approx(
        f_measure(3, 6, 5), abs=1e-12
    )
    assert f_measure(3, 6, 5) == pytest.approx(6 / 11)
    # char-alnum drops punctuation, keeps ASCII runs as lower-cased words:
    # "我爱Python3！" -> 我 爱 python3 (3); "爱 python3 和我" -> 爱 python3 和 我 (4)
    # LCS = 爱 python3 = 2 -> P = 2/3, R = 2/4 -> F = 4/7
    assert rouge.rouge_l(
        "我爱Python3！", ["爱 python3 和我"], language="zh", tokenizer="char-alnum"
    ) == pytest.approx(4 / 7, abs=1e-12)
    assert rouge.CharTokenizer().tokenize("我 爱Py！") == ["我", "爱", "P", "y", "！"]
    assert rouge.CharAlnumTokenizer().tokenize("我 爱Py3！,x") == ["我", "爱", "py3", "x"]


def test_jieba_tokenizers() -> None:
    words = rouge.JiebaTokenizer().tokenize("我爱北京天安门，Hello World！")
    assert "，" not in words and "！" not in words and "hello" in words and "北京" in words
    kept = rouge.JiebaTokenizer(keep_punctuation=True).tokenize("我爱北京天安门，Hello World！")
    assert "，" in kept and "Hello" in kept and " " not in kept
    assert rouge.rouge_l("北京天安门", ["北京天安门"], language="zh", tokenizer="jieba") == 1.0


def test_chinese_never_uses_the_default_tokenizer() -> None:
    with pytest.raises(UsageError, match="Chinese"):
        rouge.rouge_l("你好", ["你好"], language="zh", tokenizer="default")
    with pytest.raises(UsageError, match="Did you mean"):
        rouge.rouge_l("a", ["a"], language="en", tokenizer="chars")
    assert rouge.check_tokenizer("zh", None) == "char"
    assert rouge.check_tokenizer("en", None) == "default"


def test_reference_policies() -> None:
    refs = ["b d e", "a b c d"]  # F = 4/7 against the first, 1.0 against the second
    assert rouge.reference_scores("a b c d", refs, language="en") == pytest.approx([4 / 7, 1.0])
    assert rouge.rouge_l("a b c d", refs, language="en", reference_policy="max") == 1.0
    assert rouge.rouge_l("a b c d", refs, language="en", reference_policy="first") == (
        pytest.approx(4 / 7)
    )
    assert rouge.rouge_l_many(
        ["a b c d", "x"], [refs, ["x", "y"]], language="en", reference_policy="first"
    ) == pytest.approx([4 / 7, 1.0])
    with pytest.raises(UsageError):
        rouge.rouge_l("a", ["a"], language="en", reference_policy="mean")
    with pytest.raises(ValueError):
        rouge.rouge_l_many(["a"], [], language="en")
    assert rouge.mean([]) is None


def _check_figures(split_name: str, metric: str, tokenizer: str | None) -> tuple[int, float, float]:
    split = dataset.load_split(split_name, data_source.SHIPPED_ROOT)
    items = split.metrics[metric].items
    scores = [
        rouge.reference_scores(
            split.baseline_answer(item) or "", item.references,
            language=split.language, tokenizer=tokenizer,
        )
        for item in items
    ]
    assert all(split.baseline_answer(item) is not None for item in items)
    first = rouge.mean([rouge.combine_references(s, "first") for s in scores])
    best = rouge.mean([rouge.combine_references(s, "max") for s in scores])
    assert first is not None and best is not None
    return len(items), round(first, 4), round(best, 4)


@pytest.mark.slow
def test_check_figures_english_spe() -> None:
    # RoleGPT baseline answers scored as model output, default tokenizer, no stemmer.
    assert _check_figures("en", "SPE", None) == (4750, 0.2318, 0.2327)


@pytest.mark.slow
def test_check_figures_chinese_per_character() -> None:
    assert _check_figures("zh", "SPE", "char") == (239, 0.2238, 0.2239)
    assert _check_figures("zh", "CUS", "char") == (1451, 0.3726, 0.4978)
