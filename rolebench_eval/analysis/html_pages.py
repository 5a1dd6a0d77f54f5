"""Every sample of a run, on paginated pages linked from report.html: `pages/<task>-001.html`, ...

report.html embeds a bounded excerpt (html_samples.py); these pages make every other sample
reachable without making any one file large. They are derived files like report.html: written
each time the derived files are, one page at a time from `iter_samples` (memory holds at most one
page of samples per task, never the run), each page written atomically (a kill leaves the old page
or the new one, never half), and the pages of an earlier derive that this one did not write are
removed after report.html links the new set (`remove_stale_pages`).

A page shows each sample's OWN content (question, answer, score or the reason it is unscored, each
judge's verdict) and the keys of its calls. Texts a call holds (the model's prompt, PersonaGym's
score-examples prompt and reply and its 5-question judge prompt and reply, shared by a batch) are
not resolved: reading them back would parse every call of the run (~1.1 s of CPU for the 10,000
samples of bench/bench_cached_rerun.py's full PersonaGym, against ~0.1 s unresolved) for texts
that are mostly shared. Records that still carry such texts inline (schema 1, older runs) show
each distinct one once per page. Links are relative, so the run directory opens from file://
anywhere it is copied.

Samples are rendered to HTML here in Python (html.escape on every value from a record) rather than
by a Jinja macro: for those 10,000 samples a macro took 0.25 s of CPU, this 0.11 s (measured side by
side); templates/sample_page.html.j2 draws the page around them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from html import escape  # not markupsafe's: it makes a Markup object per value, ~2x the time (profiled)
from pathlib import Path
from typing import Any

from markupsafe import Markup

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running import run_dir as rd
from rolebench_eval.running.call_refs import CALL
from rolebench_eval.analysis.run_samples import iter_samples

PAGES_DIR = "pages"
SAMPLES_PER_PAGE = 200
PAGE_TEXT_CHARS = 4_000  # one runaway answer must not make a page heavy; the record has it whole
_SLOT = "<!-- rbe: samples -->"  # where a page's samples go (escaped text never holds a "<")
# The files this module writes (and so may remove): <task slug>-<number>.html and their .tmp.
_PAGE_FILE = re.compile(r"^[A-Za-z0-9._-]+-\d{3,}\.html(\.tmp)?$")


@dataclass(frozen=True)
class PageLink:
    """One written page: its path relative to the run directory, and what it holds."""

    href: str
    number: int
    first: str  # sample id of its first and last sample
    last: str
    count: int


@dataclass
class TaskPages:
    task: str
    slug: str
    pages: list[PageLink] = field(default_factory=list)
    total: int = 0


@dataclass
class SamplePages:
    """What `write_sample_pages` wrote: the pages per task (in samples.jsonl's order of tasks)."""

    tasks: list[TaskPages] = field(default_factory=list)
    per_page: int = SAMPLES_PER_PAGE
    error: str | None = None  # a damaged samples file: the pages before it were written

    @property
    def files(self) -> set[str]:
        return {Path(link.href).name for task in self.tasks for link in task.pages}


# --------------------------------------------------------------------------------------------------
# One sample as HTML


def _clip(text: Any, limit: int = PAGE_TEXT_CHARS) -> str:
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, indent=1, default=str)
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters: in the record (iter_samples)]"


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def score_text(record: Mapping[str, Any]) -> str:
    """A record's score as the pages show it: PersonaGym's `score`, RoleBench's ROUGE-L `scores`
    per reference set and each judge's verdict, or "unscored"."""
    score = record.get("score", record.get("verdict"))
    if score is not None:
        return _number(score)
    parts = []
    scores = record.get("scores")
    if isinstance(scores, Mapping):
        parts += [f"{metric} {'unscored' if value is None else _number(value)}" for metric, value in scores.items()]
    verdicts = record.get("verdicts")
    if isinstance(verdicts, Mapping):
        parts += [f"{label}: {(v or {}).get('outcome') or 'unscored'}" for label, v in verdicts.items() if isinstance(v, Mapping)]
    return " · ".join(parts) or "unscored"


def _question(record: Mapping[str, Any]) -> str | None:
    # As frames.question_text (which imports pandas): the task's question, else the last user
    # message of an inline prompt.
    question = record.get("question")
    if isinstance(question, str):
        return question
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return str(message.get("content", ""))
    return None


def _is_ref(value: Any) -> bool:
    return type(value) is dict and CALL in value


class _PageTexts:
    """The inline texts of calls on one page (schema-1 records): each distinct text is shown once,
    later samples link to the first."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, str]] = {}

    def block(self, what: str, value: Any, anchor: str, sample_id: str) -> str:
        """`value` once per page (a later sample links to it); "" for no value."""
        if value in (None, "", [], {}):
            return ""
        text = _clip(value)
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
        first = self.seen.setdefault(digest, (anchor, sample_id))
        if first[0] != anchor:
            return f'<p class="meta">{escape(what)}: the same as <a href="#{first[0]}">{escape(first[1])}</a></p>\n'
        return f"<details><summary>{escape(what)}</summary><pre>{escape(text)}</pre></details>\n"


def _texts_of_calls(record: Mapping[str, Any], judgments: list[Mapping[str, Any]], anchor: str, sample_id: str,
                    texts: _PageTexts) -> tuple[str, str]:
    """(the HTML of the texts of calls the record holds inline, the line naming the calls it refers
    to by key: `model 1a2b...`, `examples ...`, `judge ...`, each call once)."""
    blocks: list[str] = []
    keys: dict[str, str] = {}
    examples = record.get("score_examples")
    if not isinstance(examples, Mapping):
        examples = {}
    fields = [(record.get("prompt"), "model", "prompt"), (examples.get("prompt"), "examples", "score-examples prompt"),
              (examples.get("reply"), "examples", "score-examples reply"), (record.get("judge_prompt"), "judge", "judge prompt")]
    for j in judgments:
        label = f"{j.get('judge', '?')} "
        fields += [(j.get("prompt"), "judge", label + "prompt"), (j.get("reply"), "judge", label + "reply")]
    for value, what, title in fields:
        if value is None:
            continue
        if type(value) is dict and CALL in value:
            key = value[CALL]
            if isinstance(key, str) and key not in keys:
                keys[key] = f"{what} {key[:12]}"
        else:
            blocks.append(texts.block(title, value, anchor, sample_id))
    calls = f'<p class="meta calls">calls: {" · ".join(keys.values())}</p>\n' if keys else ""
    return "".join(blocks), calls


def _judgment_line(j: Mapping[str, Any]) -> str:
    score = j.get("score", j.get("verdict", j.get("outcome")))
    parts = [f"judge <b>{escape(str(j.get('judge', '?')))}</b>: {'unscored' if score is None else escape(_number(score))}"]
    reason = j.get("unscored_reason") or j.get("reason") or j.get("error")
    if reason:
        parts.append(f"({escape(str(reason))})")
    if j.get("order") is not None:
        parts.append(f"· order {escape(str(j['order']))}")
    if isinstance(j.get("batch_size"), int) and isinstance(j.get("batch_position"), int):
        parts.append(f"· question {j['batch_position'] + 1} of {j['batch_size']} of its call")
    return f'<div class="judgment">{" ".join(parts)}</div>\n'


def _turns(value: Any) -> str:
    if not isinstance(value, list):
        return ""
    out = ['<h4>Conversation</h4><div class="chat">']
    for turn in value:
        if not isinstance(turn, Mapping):
            continue
        role = str(turn.get("role", ""))
        side = "user" if role == "user" else "judge" if role == "judge" else "aside" if turn.get("note") == "not chosen" else "npc"
        head = f"round {turn['round']} · " if turn.get("round") is not None else ""
        head += str(turn.get("speaker", role or "?")) + (f" · {turn['note']}" if turn.get("note") else "")
        text = "(text of a call: in the calls files)" if _is_ref(turn.get("text")) else _clip(turn.get("text", ""))
        out.append(f'<div class="bubble {side}"><div class="role">{escape(head)}</div><pre>{escape(text)}</pre></div>')
    out.append("</div>\n")
    return "".join(out)


def sample_html(record: Mapping[str, Any], anchor: str, texts: _PageTexts) -> str:
    """One sample's block on a page: its own content, escaped; its calls by key."""
    get = record.get
    sample_id = str(get("sample_id", anchor))
    score = score_text(record)
    metric = get("metric") or get("category")
    out = [f'<details class="sample" id="{anchor}" open><summary><span class="sid">{escape(sample_id)}</span>'
           f'{" · " + escape(str(metric)) if metric else ""} · score <span class="score{" unscored" if score == "unscored" else ""}">'
           f"{escape(score)}</span></summary>\n"]
    if get("turns"):
        out.append(_turns(get("turns")))
    else:
        question = _question(record)
        if question is not None:
            out.append(f"<h4>Question</h4><pre>{escape(_clip(question))}</pre>\n")
        out.append(f'<h4>Answer</h4><pre class="answer">{escape(_clip(get("answer") or ""))}</pre>\n')
    notes = [str(v) for v in (get("unscored_reason"), get("answer_error")) if v]
    if get("empty_answer"):
        notes.append("empty answer (judged as given)")
    if get("finish_reason") not in (None, "stop"):
        notes.append(f"finish reason {get('finish_reason')}")
    if get("answer_notes"):
        notes += [str(n) for n in get("answer_notes")]
    if notes:
        out.append(f'<p class="meta">{escape("; ".join(notes))}</p>\n')
    judgments = get("judgments") or []
    judgments = [judgments] if isinstance(judgments, Mapping) else [j for j in judgments if isinstance(j, Mapping)]
    out += [_judgment_line(j) for j in judgments]
    inline, calls = _texts_of_calls(record, judgments, anchor, sample_id, texts)
    out.append(inline)
    for name, what in (("references", "reference answers"), ("baseline_answer", "baseline answer")):
        if get(name):
            out.append(f"<details><summary>{what}</summary><pre>{escape(_clip(get(name)))}</pre></details>\n")
    out.append(calls)
    out.append("</details>\n")
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# Pages


def page_name(slug: str, number: int) -> str:
    return f"{slug}-{number:03d}.html"


def _slugs() -> Callable[[str], str]:
    used: dict[str, str] = {}

    def slug_of(task: str) -> str:
        if task not in used:
            base = rd.slug(task)
            candidate, n = base, 1
            while candidate in used.values():  # two task names with the same slug
                n += 1
                candidate = f"{base}_{n}"
            used[task] = candidate
        return used[task]

    return slug_of


def write_sample_pages(run_path: Path, render: Callable[[dict[str, Any]], str], per_page: int = SAMPLES_PER_PAGE) -> SamplePages:
    """Write every sample of `run_path` onto pages of `per_page` samples per task; return the links.

    `render(context)` draws one page (html_report.py's template) from: task, number, samples (a
    slot where the samples' escaped HTML goes), first, last, count, prev, next (file names or
    None). A page is written when the next one has its first sample (so it knows it has a next
    page) or at the end.
    """
    result = SamplePages(per_page=per_page)
    if not (run_path / rd.SAMPLES).is_file():
        return result
    folder = run_path / PAGES_DIR
    slug_of = _slugs()
    tasks: dict[str, TaskPages] = {}
    pending: dict[str, list[tuple[str, str]]] = {}  # task -> [(sample id, html)] of its open page
    texts: dict[str, _PageTexts] = {}
    units: dict[str, Any] = {}

    def flush(task: str, has_next: bool) -> None:
        entry, samples = tasks[task], pending.pop(task)
        number = len(entry.pages) + 1
        name = page_name(entry.slug, number)
        context = {
            "task": task, "number": number, "samples": Markup(_SLOT),
            "first": samples[0][0], "last": samples[-1][0], "count": len(samples),
            "prev": page_name(entry.slug, number - 1) if number > 1 else None,
            "next": page_name(entry.slug, number + 1) if has_next else None,
        }
        # The template draws the page around a slot; the samples are streamed into it, never
        # joined, and never in a Jinja context (its reference cycles kept every page's samples
        # alive until the garbage collector ran: memory grew with the run).
        head, _, tail = render(context).partition(_SLOT)
        rd.write_text_atomic(folder / name, [head, *(html for _, html in samples), tail])
        entry.pages.append(PageLink(f"{PAGES_DIR}/{name}", number, samples[0][0], samples[-1][0], len(samples)))

    try:
        for index, record in enumerate(iter_samples(run_path, resolve=False)):
            task = str(record.get("task", ""))
            if task not in tasks:
                tasks[task] = TaskPages(task, slug_of(task))
                result.tasks.append(tasks[task])
            if len(pending.get(task, ())) >= per_page:
                flush(task, has_next=True)
            if task not in pending:
                pending[task], texts[task], units[task] = [], _PageTexts(), None
            html = sample_html(record, f"n{index}", texts[task])
            unit = record.get("unit")
            if unit and unit != units[task] and unit != record.get("sample_id"):
                # The unit (a persona) heads the samples that share it, once per page; a unit that
                # is its one sample (a RoleBench item) is already named by the sample's id.
                units[task] = unit
                html = f'<h3 class="unit">{escape(_clip(unit, 400))}</h3>\n{html}'
            pending[task].append((str(record.get("sample_id", index)), html))
            tasks[task].total += 1
    except (ValueError, RunDirectoryError) as error:
        result.error = str(error)
    for task in list(pending):
        flush(task, has_next=False)
    return result


def remove_stale_pages(run_path: Path, keep: Iterable[str]) -> None:
    """Remove the page files of an earlier derive that are not in `keep` (file names); the folder
    goes too when nothing is left. Only this module's file names are touched."""
    folder = run_path / PAGES_DIR
    if not folder.is_dir():
        return
    keep = set(keep)
    for path in folder.iterdir():
        if path.name not in keep and _PAGE_FILE.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
    try:
        folder.rmdir()  # only when empty
    except OSError:
        pass
