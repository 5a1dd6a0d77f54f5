"""Quality checks of a generated question set (`rbe questions check`): reported, never fixed.

Cheap lexical checks, each a finding with the persona, task and question number:
- near-duplicate: two questions of one persona and task that say nearly the same thing (difflib's
  similarity ratio of their word sequences, or the overlap of their word sets, at or above
  NEAR_DUPLICATE; among the 10,000 benchmark questions the largest similarity is 0.80: none is flagged;
  the length check flags 35 of them);
- off-setting: a question that names none of the environments selected for its persona (neither
  an environment's name nor any of its content words), although generation asked for questions
  "related to" them;
- unknown-environment: an environment the generator selected that is not among the 150 it was
  offered;
- length: a question far shorter or longer than the set's others (robust z-score of its word count
  beyond LENGTH_Z, from the median and the median absolute deviation), or under MIN_WORDS words.
"""

from __future__ import annotations

import difflib
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rolebench_eval.questions.question_sets import QuestionSet

NEAR_DUPLICATE = 0.85
LENGTH_Z = 3.5
MIN_WORDS = 5
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Words of environment names that say nothing about which environment it is.
_STOP = frozenset("a an and at in of on the to for with from by or".split())


@dataclass(frozen=True)
class Finding:
    check: str
    persona: str
    task: str | None
    question: int | None  # 1-based within the task
    detail: str

    def line(self) -> str:
        where = self.persona + (f" / {self.task}" if self.task else "") + (f" #{self.question}" if self.question else "")
        return f"{self.check:<20} {where}: {self.detail}"


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def similarity(a: str, b: str) -> float:
    """The larger of difflib's ratio of the word sequences and the Jaccard overlap of the word sets
    (words, not characters: ten times faster, and a shared long word is not many matches)."""
    wa, wb = _words(a), _words(b)
    ratio = difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()
    sa, sb = set(wa), set(wb)
    jaccard = len(sa & sb) / len(sa | sb) if sa | sb else 1.0
    return max(ratio, jaccard)


def near_duplicates(persona: str, task: str, questions: Sequence[str]) -> list[Finding]:
    found = []
    for i in range(len(questions)):
        for j in range(i + 1, len(questions)):
            score = similarity(questions[i], questions[j])
            if score >= NEAR_DUPLICATE:
                found.append(Finding("near-duplicate", persona, task, j + 1,
                                     f"{score:.2f} similar to #{i + 1}"))
    return found


def _setting_words(settings: Iterable[str]) -> set[str]:
    return {w for s in settings for w in _words(s) if w not in _STOP and len(w) >= 3}


def off_setting(persona: str, task: str, questions: Sequence[str], settings: Sequence[str]) -> list[Finding]:
    if not settings:
        return []
    names = [s.casefold() for s in settings]
    words = _setting_words(settings)
    found = []
    for number, question in enumerate(questions, start=1):
        text = question.casefold()
        if any(name in text for name in names) or words & set(_words(question)):
            continue
        found.append(Finding("off-setting", persona, task, number, "names none of its environments"))
    return found


def length_outliers(items: Sequence[tuple[str, str, int, str]]) -> list[Finding]:
    """`items`: (persona, task, number, question) over the whole set."""
    counts = [len(_words(q)) for *_, q in items]
    if not counts:
        return []
    median = statistics.median(counts)
    mad = statistics.median(abs(c - median) for c in counts) * 1.4826
    found = []
    for (persona, task, number, _), count in zip(items, counts):
        z = (count - median) / mad if mad else 0.0
        if count < MIN_WORDS or abs(z) > LENGTH_Z:
            found.append(Finding("length", persona, task, number,
                                 f"{count} words (set median {median:g}{f', robust z {z:+.1f}' if mad else ''})"))
    return found


def check_set(qset: QuestionSet, offered: Sequence[str] = ()) -> list[Finding]:
    """Every finding of the lexical checks; `offered`: the environments generation offered."""
    entries = {e["id"]: e for e in qset.manifest.get("personas") or []}
    offered_names = {s.casefold() for s in offered}
    findings: list[Finding] = []
    items: list[tuple[str, str, int, str]] = []
    for persona in qset.personas:
        settings = list(entries.get(persona.id, {}).get("settings") or [])
        if offered_names:
            for setting in settings:
                if setting.casefold() not in offered_names:
                    findings.append(Finding("unknown-environment", persona.id, None, None,
                                            f"{setting!r} is not among the environments offered"))
        for task, questions in persona.questions.items():
            findings += near_duplicates(persona.id, task, questions)
            findings += off_setting(persona.id, task, questions, settings)
            items += [(persona.id, task, n, q) for n, q in enumerate(questions, start=1)]
    findings += length_outliers(items)
    return findings


def report(qset: QuestionSet, findings: Sequence[Finding]) -> dict[str, Any]:
    by_check: dict[str, int] = {}
    for finding in findings:
        by_check[finding.check] = by_check.get(finding.check, 0) + 1
    return {
        "set": str(qset.path),
        "questions_sha256": qset.sha256,
        "questions": sum(len(q) for p in qset.personas for q in p.questions.values()),
        "thresholds": {"near_duplicate": NEAR_DUPLICATE, "length_z": LENGTH_Z, "min_words": MIN_WORDS},
        "counts": by_check,
        "findings": [asdict(f) for f in findings],
    }
