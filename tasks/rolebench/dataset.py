"""Load RoleBench from a directory in the dataset's own layout (see `SPLITS`).

Where the data comes from (the `root` argument, `RBE_ROLEBENCH_DIR`, the shipped copy, or the
Hugging Face hub on explicit request) is data_source.py; nothing here touches the network.

Choices this module makes (each is recorded by name where it can change a number):

- Items keep the question text exactly as in the file (English role-specific questions start with
  a space; in `en`, 25 of them appear twice, differing only in a trailing space, with different
  references). Duplicates are NOT dropped: every row is its own item with its own `item_id`, which
  is what the check figures' n = 4,750 counts. `RoleBenchSplit.notes` says how many there are.
- `item_id` = sha1 of split, file path (relative to the root), role, question and 1-based line
  number: stable across runs and machines, distinct for duplicate rows.
- RAW and CUS score the same answer (to a general test question) against different references,
  so a RAW item carries the `item_id` of its CUS item: one generation, two scores.
- RoleGPT baseline answers are matched to test items by (role, normalised question), where
  normalising collapses all whitespace runs and strips the ends. Policy `normalised-last`
  (default): when several baseline rows share a key, the last one in the file wins; this is the
  pairing that reproduces the protocol's check figures (row order does not pair: the files are
  in different orders). Policy `exact-then-normalised`: an exact (role, question) match first,
  else `normalised-last`.
- RAW references come from `instructions-eng/instructions-general.jsonl` (zh:
  `instructions-zh/instructions-general.jsonl`). That file is not in the shipped copy; public code
  that reads the real file uses JSONL rows `{"instruction": str, "target": str}`, so that is the
  expected layout (`answer` or `output` are accepted in place of `target`; when an `input` field
  is non-empty the row is also keyed by instruction + "\\n" + input). A general test item is
  joined to the row whose normalised instruction equals its normalised question.
- Missing files never raise: the metric they feed is reported as not computable with the paths
  (`MetricItems.missing_files`). Malformed content raises `DataError` with file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rolebench_eval.errors import DataError, unknown

from .data_source import resolve_root

BASELINE_MATCH_POLICIES: tuple[str, ...] = ("normalised-last", "exact-then-normalised")
METRICS: tuple[str, ...] = ("SPE", "CUS", "RAW")
_RAW_ANSWER_FIELDS = ("target", "answer", "output")


@dataclass(frozen=True)
class SplitLayout:
    """Where one split's files live, relative to the dataset root."""

    name: str
    language: str  # "en" or "zh": picks prompt template and ROUGE tokenizer
    base: str  # folder holding general/ and role_specific/
    raw_file: str
    descriptions_file: str

    def test_file(self, subset: str) -> str:
        return f"{self.base}/{subset}/test.jsonl"

    def baseline_file(self, subset: str) -> str:
        return f"{self.base}/{subset}/rolegpt_baseline.jsonl"


SPLITS: dict[str, SplitLayout] = {
    "en": SplitLayout(
        "en", "en", "rolebench-eng/instruction-generalization",
        "instructions-eng/instructions-general.jsonl", "profiles-eng/desc.json",
    ),
    "en-rolegen": SplitLayout(
        "en-rolegen", "en", "rolebench-eng/role-generalization",
        "instructions-eng/instructions-general.jsonl", "profiles-eng/desc.json",
    ),
    "zh": SplitLayout(
        "zh", "zh", "rolebench-zh",
        "instructions-zh/instructions-general.jsonl", "profiles-zh/desc.json",
    ),
}
# Which test file each metric reads (RAW reads the general test file plus the raw file).
_METRIC_SUBSET = {"SPE": "role_specific", "CUS": "general", "RAW": "general"}


@dataclass(frozen=True)
class RoleBenchItem:
    item_id: str
    split: str
    subset: str  # "general" or "role_specific"
    source: str  # file path relative to the dataset root
    line: int  # 1-based line number in `source`
    role: str
    question: str  # exactly as in the file: this is what the model is sent
    references: tuple[str, ...]
    type: tuple[str, ...]  # normalised: absent -> (), str -> (str,), list -> tuple


@dataclass(frozen=True)
class MetricItems:
    """The items of one metric, or why it cannot be computed."""

    metric: str
    items: tuple[RoleBenchItem, ...]
    missing_files: tuple[str, ...] = ()  # absolute paths
    # Items of the source file left out of this metric (RAW: no original answer found).
    unmatched_item_ids: tuple[str, ...] = ()

    @property
    def computable(self) -> bool:
        return not self.missing_files and bool(self.items)


@dataclass(frozen=True)
class BaselineAnswers:
    """RoleGPT answers for one subset's test items, keyed by item_id."""

    subset: str
    match_policy: str
    answers: Mapping[str, str] = field(default_factory=dict)
    missing_files: tuple[str, ...] = ()
    unmatched_item_ids: tuple[str, ...] = ()  # test items with no baseline row


@dataclass(frozen=True)
class RoleBenchSplit:
    split: str
    language: str
    root: str
    metrics: Mapping[str, MetricItems]
    baselines: Mapping[str, BaselineAnswers]  # by subset
    descriptions: Mapping[str, str] | None  # None when the description file is missing
    descriptions_missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def description(self, role: str) -> str | None:
        return None if self.descriptions is None else self.descriptions.get(role)

    def baseline_answer(self, item: RoleBenchItem) -> str | None:
        baseline = self.baselines.get(item.subset)
        return None if baseline is None else baseline.answers.get(item.item_id)

    def not_computable(self) -> dict[str, tuple[str, ...]]:
        """Metric -> missing file paths, for every metric that cannot be computed."""
        return {m: s.missing_files for m, s in self.metrics.items() if not s.computable}


def normalise_question(text: str) -> str:
    """Whitespace-insensitive key for joining files (never used for what the model is sent)."""
    return " ".join(text.split())


def normalise_type(value: Any, *, where: str = "") -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DataError(f"{where}: field 'type' must be a string or a list of strings, got {value!r}")


def make_item_id(split: str, source: str, role: str, question: str, line: int) -> str:
    payload = "\x1f".join((split, source, role, question, str(line)))
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line; DataError names file and line."""
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(
                        f"{path}:{number}: malformed JSON ({error.msg} at column {error.colno})"
                    ) from None
                if not isinstance(row, dict):
                    kind = type(row).__name__
                    raise DataError(f"{path}:{number}: expected a JSON object, got {kind}")
                rows.append((number, row))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return rows


def _string_field(row: dict[str, Any], name: str, where: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {value!r}")
    return value


def _references(row: dict[str, Any], where: str) -> tuple[str, ...]:
    value = row.get("generated")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: field 'generated' must be a non-empty list of strings")
    return tuple(value)


def load_items(root: Path, split: str, subset: str) -> tuple[RoleBenchItem, ...] | None:
    """The test items of one subset, or None when the file is missing."""
    source = SPLITS[split].test_file(subset)
    path = root / source
    if not path.is_file():
        return None
    items = []
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        role = _string_field(row, "role", where)
        question = _string_field(row, "question", where)
        items.append(
            RoleBenchItem(
                item_id=make_item_id(split, source, role, question, line),
                split=split,
                subset=subset,
                source=source,
                line=line,
                role=role,
                question=question,
                references=_references(row, where),
                type=normalise_type(row.get("type"), where=where),
            )
        )
    return tuple(items)


def load_raw_answers(path: Path) -> dict[str, tuple[str, ...]]:
    """Normalised instruction -> original (non-role-play) answers, from instructions-general."""
    answers: dict[str, list[str]] = {}
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        instruction = row.get("instruction", row.get("question"))
        answer = next((row[f] for f in _RAW_ANSWER_FIELDS if isinstance(row.get(f), str)), None)
        if not isinstance(instruction, str) or answer is None:
            raise DataError(
                f"{where}: expected an 'instruction' string and one of {_RAW_ANSWER_FIELDS} "
                f"(the original answer); found fields {sorted(row)}"
            )
        keys = [normalise_question(instruction)]
        extra = row.get("input")
        if isinstance(extra, str) and extra.strip():
            keys.append(normalise_question(f"{instruction}\n{extra}"))
        for key in keys:
            answers.setdefault(key, []).append(answer)
    return {k: tuple(v) for k, v in answers.items()}


def match_baseline(
    items: tuple[RoleBenchItem, ...], path: Path, policy: str
) -> tuple[dict[str, str], tuple[str, ...]]:
    """(item_id -> baseline answer, ids of items without one) under the named policy."""
    if policy not in BASELINE_MATCH_POLICIES:
        raise unknown("baseline match policy", policy, BASELINE_MATCH_POLICIES)
    by_normalised: dict[tuple[str, str], str] = {}
    by_exact: dict[tuple[str, str], str] = {}
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        role = _string_field(row, "role", where)
        question = _string_field(row, "question", where)
        answer = _references(row, where)[0]
        by_normalised[(role, normalise_question(question))] = answer  # last row wins
        by_exact.setdefault((role, question), answer)
    answers: dict[str, str] = {}
    unmatched: list[str] = []
    for item in items:
        found = None
        if policy == "exact-then-normalised":
            found = by_exact.get((item.role, item.question))
        if found is None:
            found = by_normalised.get((item.role, normalise_question(item.question)))
        if found is None:
            unmatched.append(item.item_id)
        else:
            answers[item.item_id] = found
    return answers, tuple(unmatched)


def load_descriptions(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: malformed JSON ({error.msg})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise DataError(f"{path}: expected a JSON object mapping role name to description string")
    return data


def _duplicate_note(subset: str, items: tuple[RoleBenchItem, ...]) -> str | None:
    counts = Counter((i.role, normalise_question(i.question)) for i in items)
    groups = [n for n in counts.values() if n > 1]
    if not groups:
        return None
    return (
        f"{subset}: {len(groups)} (role, question) pairs occur more than once when whitespace is "
        f"ignored ({sum(groups)} rows); all rows are kept as separate items"
    )


def load_split(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    baseline_match: str = "normalised-last",
) -> RoleBenchSplit:
    """SPE / CUS / RAW items, baseline answers and role descriptions of one split."""
    if split not in SPLITS:
        raise unknown("RoleBench split", split, SPLITS)
    if baseline_match not in BASELINE_MATCH_POLICIES:
        raise unknown("baseline match policy", baseline_match, BASELINE_MATCH_POLICIES)
    layout = SPLITS[split]
    base = resolve_root(root)
    subsets = {s: load_items(base, split, s) for s in ("role_specific", "general")}
    notes = [n for s, its in subsets.items() if its and (n := _duplicate_note(s, its))]

    metrics: dict[str, MetricItems] = {}
    for metric in ("SPE", "CUS"):
        subset = _METRIC_SUBSET[metric]
        found = subsets[subset]
        missing = () if found is not None else (str(base / layout.test_file(subset)),)
        metrics[metric] = MetricItems(metric, found or (), missing)
    metrics["RAW"] = _raw_metric(base, layout, subsets["general"])

    baselines: dict[str, BaselineAnswers] = {}
    for subset, found in subsets.items():
        path = base / layout.baseline_file(subset)
        if not path.is_file():
            baselines[subset] = BaselineAnswers(subset, baseline_match, missing_files=(str(path),))
        elif found is not None:
            answers, unmatched = match_baseline(found, path, baseline_match)
            baselines[subset] = BaselineAnswers(subset, baseline_match, answers, (), unmatched)

    desc_path = base / layout.descriptions_file
    descriptions = load_descriptions(desc_path) if desc_path.is_file() else None
    return RoleBenchSplit(
        split=split,
        language=layout.language,
        root=str(base),
        metrics=metrics,
        baselines=baselines,
        descriptions=descriptions,
        descriptions_missing=() if descriptions is not None else (str(desc_path),),
        notes=tuple(notes),
    )


def _raw_metric(
    base: Path, layout: SplitLayout, general: tuple[RoleBenchItem, ...] | None
) -> MetricItems:
    missing = []
    if general is None:
        missing.append(str(base / layout.test_file("general")))
    raw_path = base / layout.raw_file
    if not raw_path.is_file():
        missing.append(str(raw_path))
    if missing or general is None:
        return MetricItems("RAW", (), tuple(missing))
    raw = load_raw_answers(raw_path)
    items, unmatched = [], []
    for item in general:
        answers = raw.get(normalise_question(item.question))
        if answers is None:
            unmatched.append(item.item_id)
        else:
            # Same item_id as the CUS item: the model answers once, RAW rescores that answer.
            items.append(_with_references(item, answers))
    return MetricItems("RAW", tuple(items), (), tuple(unmatched))


def _with_references(item: RoleBenchItem, references: tuple[str, ...]) -> RoleBenchItem:
    return replace(item, references=references)
