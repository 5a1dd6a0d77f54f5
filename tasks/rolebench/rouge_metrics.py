"""ROUGE-L F (RAW / CUS / SPE) with the `rouge-score` package, under named tokenizer and
multi-reference policies that every result records.

Tokenizers (`TOKENIZERS`):

- `default`: rouge-score's own tokenizer (lower-case, every character outside [a-z0-9] becomes a
  separator, no stemmer). English only: it deletes CJK text, so Chinese would score 0.0.
- `char`: every non-whitespace character is one token, case preserved (CJK characters, Latin
  letters, digits and punctuation alike). This is the per-character tokenization that reproduces
  the protocol's Chinese check figures (SPE 0.2238/0.2239, CUS 0.3726/0.4978); variants that drop
  punctuation or lower-case do not (see `char-alnum`).
- `char-alnum`: lower-case; each CJK ideograph (U+3400-4DBF, U+4E00-9FFF, U+F900-FAFF) is a
  token, each run of ASCII [a-z0-9] is one token, everything else (punctuation, full-width
  symbols, whitespace, other scripts) is dropped. Closer to rouge-score's English behaviour, but
  it gives lower numbers on RoleBench-zh (SPE 0.2023, CUS 0.3474 first-reference).
- `jieba`: jieba word segmentation (default dictionary, accurate mode), lower-cased, tokens with
  no letter or digit (punctuation, whitespace, symbols) dropped. OpenCompass-style words, scored
  with rouge-score's LCS (not the `rouge_chinese` package). On RoleBench-zh this gives SPE
  0.1914/0.1916 and CUS 0.2890/0.4260 (first/max), well below the rouge_chinese figures, because
  those keep punctuation tokens (see `jieba-punct`).
- `jieba-punct`: jieba words exactly as segmented (case preserved), only whitespace tokens
  dropped, punctuation kept. Within 0.0003 of the protocol's jieba + `rouge_chinese` figures
  (SPE 0.2353/0.2355 vs 0.2352/0.2354, CUS 0.3461/0.4719 vs 0.3464/0.4722).

Reference policies (`REFERENCE_POLICIES`): `max` (best F over the references; the closest match
to the paper) and `first` (only the first reference, as OpenCompass does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Protocol

from rouge_score import rouge_scorer

from rolebench_eval.errors import UsageError, unknown

TOKENIZERS: tuple[str, ...] = ("default", "char", "char-alnum", "jieba", "jieba-punct")
REFERENCE_POLICIES: tuple[str, ...] = ("max", "first")
DEFAULT_TOKENIZER = {"en": "default", "zh": "char"}
DEFAULT_REFERENCE_POLICY = "max"

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CHAR_ALNUM = re.compile(f"[{_CJK}]|[a-z0-9]+")


class _Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...


class CharTokenizer:
    """`char`: one token per non-whitespace character, case preserved."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


class CharAlnumTokenizer:
    """`char-alnum`: CJK ideographs one by one, ASCII letter/digit runs as words, rest dropped."""

    def tokenize(self, text: str) -> list[str]:
        return _CHAR_ALNUM.findall(text.lower())


class JiebaTokenizer:
    """`jieba`: jieba words, lower-cased, tokens without any letter or digit dropped.

    With `keep_punctuation` (`jieba-punct`): words as segmented, only whitespace dropped.
    """

    def __init__(self, keep_punctuation: bool = False) -> None:
        import logging

        import jieba

        # jieba prints its dictionary-loading chatter at DEBUG/INFO on import and first use.
        jieba.setLogLevel(logging.WARNING)
        self._jieba = jieba
        self._keep_punctuation = keep_punctuation

    def tokenize(self, text: str) -> list[str]:
        if self._keep_punctuation:
            return [w for w in self._jieba.lcut(text) if w.strip()]
        words = (w.strip().lower() for w in self._jieba.lcut(text))
        return [w for w in words if any(c.isalnum() for c in w)]


def check_tokenizer(language: str, tokenizer: str | None) -> str:
    """Resolve the tokenizer name for a language; refuse Chinese with `default`."""
    if language not in DEFAULT_TOKENIZER:
        raise unknown("language", language, DEFAULT_TOKENIZER)
    name = tokenizer or DEFAULT_TOKENIZER[language]
    if name not in TOKENIZERS:
        raise unknown("ROUGE tokenizer", name, TOKENIZERS)
    if language == "zh" and name == "default":
        raise UsageError(
            "ROUGE tokenizer 'default' deletes every character outside [a-z0-9], so Chinese "
            "text would score 0.0; use 'char' (per character) or 'jieba' (words) for zh."
        )
    return name


@lru_cache(maxsize=None)
def _scorer(tokenizer: str) -> rouge_scorer.RougeScorer:
    # One scorer per tokenizer: jieba's dictionary load is the expensive part (about a second).
    factories: dict[str, Callable[[], _Tokenizer]] = {
        "char": CharTokenizer,
        "char-alnum": CharAlnumTokenizer,
        "jieba": JiebaTokenizer,
        "jieba-punct": lambda: JiebaTokenizer(keep_punctuation=True),
    }
    # None makes rouge-score use its own tokenizer (the `default` policy).
    custom: _Tokenizer | None = factories[tokenizer]() if tokenizer in factories else None
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=custom)


def reference_scores(
    answer: str, references: Sequence[str], *, language: str, tokenizer: str | None = None
) -> list[float]:
    """ROUGE-L F of `answer` against each reference, in reference order."""
    scorer = _scorer(check_tokenizer(language, tokenizer))
    # rouge-score's argument order is (target, prediction); F is symmetric but P/R are not.
    return [scorer.score(ref, answer)["rougeL"].fmeasure for ref in references]


def combine_references(scores: Sequence[float], reference_policy: str) -> float:
    """Collapse per-reference scores with a named policy (`max` or `first`)."""
    if reference_policy not in REFERENCE_POLICIES:
        raise unknown("reference policy", reference_policy, REFERENCE_POLICIES)
    if not scores:
        raise ValueError("an item has no references; it cannot be scored")
    return scores[0] if reference_policy == "first" else max(scores)


def rouge_l(
    answer: str,
    references: Sequence[str],
    *,
    language: str,
    tokenizer: str | None = None,
    reference_policy: str = DEFAULT_REFERENCE_POLICY,
) -> float:
    """ROUGE-L F of one answer against its references under the named policies."""
    if reference_policy not in REFERENCE_POLICIES:
        raise unknown("reference policy", reference_policy, REFERENCE_POLICIES)
    refs = references[:1] if reference_policy == "first" else references
    return combine_references(
        reference_scores(answer, refs, language=language, tokenizer=tokenizer), reference_policy
    )


def rouge_l_many(
    answers: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    language: str,
    tokenizer: str | None = None,
    reference_policy: str = DEFAULT_REFERENCE_POLICY,
) -> list[float]:
    """Per-item ROUGE-L F for parallel lists of answers and reference lists."""
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers but {len(references)} reference lists")
    return [
        rouge_l(a, refs, language=language, tokenizer=tokenizer, reference_policy=reference_policy)
        for a, refs in zip(answers, references)
    ]


def mean(values: Sequence[float]) -> float | None:
    """Mean over items, None for an empty list (a metric with no items is not 0.0)."""
    return sum(values) / len(values) if values else None
