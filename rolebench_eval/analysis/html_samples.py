"""The samples embedded in the HTML reports (html_report.py): record views and text cutting.

At most a page's sample limit of records is read (texts resolved from the calls files by
`iter_samples`), long texts are cut at MAX_TEXT_CHARS, and a prompt shared by a batch of samples is
embedded once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running import run_dir as rd
from rolebench_eval.analysis.html_pages import score_text
from rolebench_eval.analysis.run_samples import iter_samples

MAX_TEXT_CHARS = 20_000


def _clip(text: Any) -> str:
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, indent=1, default=str)
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"\n[... {len(text) - MAX_TEXT_CHARS} more characters: see the run's records (iter_samples)]"


def _messages(value: Any) -> list[dict[str, str]]:
    """Chat messages [{role, content}] from a record field (a message list, a string, or absent)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "text", "content": _clip(value)}]
    if isinstance(value, list) and all(isinstance(m, Mapping) for m in value):
        return [{"role": str(m.get("role", "?")), "content": _clip(m.get("content", ""))} for m in value]
    return [{"role": "data", "content": _clip(value)}]


# Fields shown in their own sections; the rest of a record is listed as metadata.
_SECTION_FIELDS = {"prompt", "answer", "judge_prompt", "judgments", "score_examples", "schema", "turns"}


def _turns(value: Any) -> list[dict[str, Any]]:
    """A dialogue's transcript (record field `turns`: [{speaker, role, text, round?, note?}]) as
    chat bubbles; `side` is the bubble's CSS class: the user's turns right, the judge's marked."""
    if not isinstance(value, list):
        return []
    turns = []
    for turn in value:
        if not isinstance(turn, Mapping):
            continue
        role = str(turn.get("role", ""))
        note = str(turn.get("note") or "")
        side = "user" if role == "user" else "judge" if role == "judge" else "aside" if note == "not chosen" else "npc"
        turns.append({"speaker": str(turn.get("speaker", role or "?")), "text": _clip(turn.get("text", "")),
                      "round": turn.get("round"), "note": note, "side": side})
    return turns


def _sample_view(record: Mapping[str, Any], run_label: str, index: int) -> dict[str, Any]:
    judgments = record.get("judgments") or []
    if isinstance(judgments, Mapping):
        judgments = [judgments]
    replies = [
        {
            "judge": str(j.get("judge", "?")),
            "score": j.get("score", j.get("verdict", j.get("outcome"))),
            "reason": j.get("unscored_reason") or j.get("reason") or "",
            "reply": _clip(j.get("reply", j.get("raw", ""))),
            "prompt": _messages(j.get("prompt")),
        }
        for j in judgments
        if isinstance(j, Mapping)
    ]
    meta = {key: _clip(value) for key, value in record.items() if key not in _SECTION_FIELDS and value not in (None, "", [], {})}
    examples = record.get("score_examples")
    return {
        "id": f"s{index}",
        "run": run_label,
        "task": str(record.get("task", "")),
        "sample_id": str(record.get("sample_id", index)),
        "unit": str(record.get("unit", "")),
        "metric": str(record.get("metric", "")),
        # RoleBench has no single score: its ROUGE-L per reference set and each judge's verdict.
        "score": score_text(record),
        "prompt": _messages(record.get("prompt")),
        "answer": _clip(record.get("answer") or ""),
        "judge_prompt": _messages(record.get("judge_prompt")),
        "examples_prompt": _messages(examples.get("prompt")) if isinstance(examples, Mapping) else [],
        "judge_prompt_same_as": None,  # {id, sample_id} of the sample showing the same text
        "examples_prompt_same_as": None,
        "judgments": replies,
        "turns": _turns(record.get("turns")),
        "meta": meta,
    }


@dataclass
class SampleSet:
    run_label: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


def read_samples(run_path: Path, run_label: str, limit: int) -> SampleSet:
    """The first `limit` records (texts resolved from the calls files by `iter_samples`) as view
    dicts, and how many there are in all.

    A text shared by a batch of samples (PersonaGym's judge prompt and score-examples prompt) is
    embedded once: later samples of the batch point to the first one, so the page grows with the
    texts, not with the batch size.
    """
    result = SampleSet(run_label)
    path = run_path / rd.SAMPLES
    if not path.is_file():
        return result
    seen: dict[tuple[str, str], dict[str, str]] = {}
    try:
        for record in itertools.islice(iter_samples(run_path), limit):
            view = _sample_view(record, run_label, len(result.samples))
            for name in ("judge_prompt", "examples_prompt"):
                if view[name]:
                    digest = hashlib.sha256(json.dumps(view[name]).encode("utf-8")).hexdigest()
                    first = seen.setdefault((name, digest), {"id": view["id"], "sample_id": view["sample_id"]})
                    if first["id"] != view["id"]:
                        view[name], view[f"{name}_same_as"] = [], first
            result.samples.append(view)
    except (ValueError, RunDirectoryError) as error:
        # A damaged samples or calls file: the page says so where the samples would be.
        result.samples.append(_sample_view({"sample_id": "unreadable", "answer": f"({error})"}, run_label, len(result.samples)))
    with path.open("rb") as handle:
        result.total = sum(1 for line in handle if line.strip())
    return result
