"""Published tables of the PersonaGym, OpenCharacter and RoleLLM papers, re-rendered with measured rows.

The reference numbers ship inside the package (`rolebench_eval/reference_tables/*.json`, loaded with
importlib.resources so an installed `rbe` finds them anywhere); `results/reference/` at the
repository top is the identical human-facing copy (a test keeps the two in step).

`render_table` prints a paper's table the way the paper prints it (published rows first, then the
measured ones), in markdown, LaTeX or CSV. Numbers from different protocols or judges are not
comparable, so a measured row whose protocol, judge, examples model or a required published
setting (`published_settings.required`, as manifest paths: the question set) differs from the
table's, or whose measurement settings differ from the other measured rows', is refused unless the
caller opts in with `allow_mismatch=True`, and then it is visibly flagged. A row measured on other
terms than the paper's numbers (`published_settings.flagged`: the unscored policy, the number of
personas or items) is always shown, flagged with the reason: a 20-persona run is a fine sanity check
but not a reproduction.

This module holds the table model, its loading and those checks; the markdown, LaTeX and CSV
output is in `paper_table_render`, whose public names are re-exported here.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from rolebench_eval import naming
from rolebench_eval.analysis import comparability, paper_table_render
from rolebench_eval.errors import DataError, UsageError, did_you_mean, unknown
# Re-exported: callers take the marks, the formats and these helpers from this module.
from rolebench_eval.analysis.paper_table_render import MISMATCH_MARK, OUTPUT_FORMATS, PUBLISHED_MARK  # noqa: F401
from rolebench_eval.analysis.paper_table_render import format_cell, latex_escape  # noqa: F401

SCHEMA_VERSION = 1

# Valid value ranges per column unit: catches a win rate passed as a fraction next to percents
# only partly (0.56 is a legal percent), but does catch a 1-5 score in a ROUGE column and the like.
_UNIT_RANGES = {"likert": (0.0, 5.0), "rouge_l_f": (0.0, 1.0), "percent": (0.0, 100.0)}


@dataclass(frozen=True)
class Cell:
    """One table cell: mean, and std / n where known (None where not published or not measured)."""

    mean: float | None
    std: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class Column:
    id: str  # the key used in measured rows and CSV headers
    label: str  # as printed in the paper
    format: str  # "mean_std_short" 4.66 (.27) | "mean_std" 3.96 (0.80) | "rouge" 0.5764 | "percent" 55.82
    unit: str  # "likert" | "rouge_l_f" | "percent"
    judged: bool  # whether the number comes from an LLM judge (so the judge must match)
    # A table over several tasks (RPBench-Auto: Character, Scene) names each column's task and
    # metric; `derived: "mean"` is the mean of the row's task columns (table_rows.measured_rows).
    task: str | None = None
    metric: str | None = None
    derived: str | None = None


@dataclass(frozen=True)
class Citation:
    authors: tuple[str, ...]
    short: str  # "Samuel et al."
    title: str
    arxiv_id: str | None  # None: no paper (RPBench-Auto's leaderboard); `url` says where instead
    table: int | None  # None where the project docs do not give the number
    section: str | None = None
    note: str | None = None
    url: str | None = None

    def text(self) -> str:
        where = f"Table {self.table}" if self.table is not None else (self.section or "")
        source = f"arXiv:{self.arxiv_id}" if self.arxiv_id else (self.url or "")
        return f'{self.short}, "{self.title}", {source}' + (f", {where}" if where else "")


@dataclass(frozen=True)
class PublishedRow:
    model: str
    size: str | None
    values: Mapping[str, Cell]
    note: str | None = None


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    citation: Citation
    protocol: str
    judges: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[PublishedRow, ...]
    benchmark: str
    statistic: str
    examples_model: str | None = None
    # Manifest paths -> the published value: a differing row is refused (required) or flagged.
    required: Mapping[str, Any] = field(default_factory=dict)
    flagged: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_size(self) -> bool:
        return any(row.size is not None for row in self.rows)

    def column(self, column_id: str) -> Column:
        for column in self.columns:
            if column.id == column_id:
                return column
        raise unknown("column", column_id, [c.id for c in self.columns])


@dataclass(frozen=True)
class MeasuredRow:
    """A row measured by this harness: values in the table's units (win rate in percent)."""

    label: str
    protocol: str
    judge: tuple[str, ...]  # one judge, or the ensemble's judges (order does not matter)
    values: Mapping[str, Cell] = field(default_factory=dict)
    size: str | None = None
    examples_model: str | None = None  # None: unknown or unused (not checked)
    # Flattened measurement settings of the run's task (comparability.measurement_settings) and
    # its non-blocking patterns; empty for rows built by hand (then only protocol/judge are checked).
    settings: Mapping[str, Any] = field(default_factory=dict)
    non_blocking: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeasuredRow:
        """From `{"label", "protocol", "judge": str | [str], "values": {col: {mean, std, n}}, "size"?}`."""
        missing = [key for key in ("label", "protocol", "judge", "values") if key not in data]
        if missing:
            raise UsageError(f"measured row {data.get('label', '?')!r} lacks {missing}.")
        judge = data["judge"]
        judges = (judge,) if isinstance(judge, str) else tuple(judge)
        values = {}
        for column_id, cell in data["values"].items():
            if isinstance(cell, Cell):
                values[column_id] = cell
            elif isinstance(cell, Mapping):
                values[column_id] = Cell(mean=cell.get("mean"), std=cell.get("std"), n=cell.get("n"))
            else:
                raise UsageError(
                    f"measured row {data['label']!r}, column {column_id!r}: expected {{mean, std, n}}, got {cell!r}."
                )
        return cls(label=data["label"], protocol=data["protocol"], judge=judges, values=values, size=data.get("size"))


# --------------------------------------------------------------------------------------------------
# Loading


def _reference_files() -> dict[str, Any]:
    folder = resources.files("rolebench_eval.reference_tables")
    return {entry.name[: -len(".json")]: entry for entry in folder.iterdir() if entry.name.endswith(".json")}


def list_tables() -> list[str]:
    """Names of the shipped paper tables (kebab-case: `opencharacter-table3`), sorted."""
    return sorted(naming.table_name(stem) for stem in _reference_files())


def _cell(data: Mapping[str, Any]) -> Cell:
    return Cell(mean=data.get("mean"), std=data.get("std"), n=data.get("n"))


def load_table(name: str) -> PaperTable:
    """One shipped paper table by name, e.g. 'opencharacter-table3' (also its file's old name,
    'opencharacter_table3', in any case: rolebench_eval.naming)."""
    files = _reference_files()
    stem = naming.resolve_table(name, files)
    name = naming.table_name(stem)
    try:
        data = json.loads(files[stem].read_text(encoding="utf-8"))
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"reference table {name}: schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}.")
        citation = data["citation"]
        return PaperTable(
            name=name,  # the kebab-case name, whatever the file's `name` field says
            title=data["title"],
            citation=Citation(
                authors=tuple(citation["authors"]),
                short=citation["short"],
                title=citation["title"],
                arxiv_id=citation["arxiv_id"],
                table=citation.get("table"),
                section=citation.get("section"),
                note=citation.get("note"),
                url=citation.get("url"),
            ),
            protocol=data["protocol"],
            judges=tuple(data["judges"]),
            columns=tuple(Column(**column) for column in data["columns"]),
            rows=tuple(
                PublishedRow(
                    model=row["model"],
                    size=row.get("size"),
                    values={key: _cell(value) for key, value in row["values"].items()},
                    note=row.get("note"),
                )
                for row in data["rows"]
            ),
            benchmark=data["benchmark"],
            statistic=data["statistic"],
            examples_model=data.get("examples_model"),
            required=dict((data.get("published_settings") or {}).get("required") or {}),
            flagged=dict((data.get("published_settings") or {}).get("flagged") or {}),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise DataError(f"reference table {name} is malformed: {error!r}") from error


# --------------------------------------------------------------------------------------------------
# Measured rows: validation


@dataclass(frozen=True)
class CheckedRow:
    """A measured row as `_check_row` passed it, for the renderers (paper_table_render)."""

    row: MeasuredRow
    mismatch: str  # "" when the row is comparable with the published rows and the other measured rows

    @property
    def flagged(self) -> bool:
        return bool(self.mismatch)


def _judges_match(table: PaperTable, row: MeasuredRow) -> bool:
    return frozenset(j.strip() for j in row.judge) == frozenset(table.judges)


def _published(value: Any) -> str:
    return "none" if value is None else repr(value)


def _check_row(table: PaperTable, row: MeasuredRow, allow_mismatch: bool,
               first: MeasuredRow | None = None) -> CheckedRow:
    known = [column.id for column in table.columns]
    for column_id, cell in row.values.items():
        if column_id not in known:
            raise UsageError(
                f"measured row {row.label!r}: table {table.name} has no column {column_id!r}."
                f"{did_you_mean(column_id, known)} Columns: {', '.join(known)}."
            )
        low, high = _UNIT_RANGES[table.column(column_id).unit]
        for what, value in (("mean", cell.mean), ("std", cell.std)):
            if value is None:
                continue
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise UsageError(f"measured row {row.label!r}, column {column_id!r}: {what} {value!r} is not a finite number.")
        if cell.mean is not None and not low <= cell.mean <= high:
            raise UsageError(
                f"measured row {row.label!r}, column {column_id!r}: mean {cell.mean} is outside "
                f"{low:g}..{high:g} ({table.column(column_id).unit})."
            )
        if cell.std is not None and cell.std < 0:
            raise UsageError(f"measured row {row.label!r}, column {column_id!r}: negative std {cell.std}.")

    problems = []
    if row.protocol != table.protocol:
        problems.append(f"protocol {row.protocol!r} (table: {table.protocol!r})")
    # ROUGE columns do not involve a judge; only a row that reports a judged number must match it.
    judged = any(table.column(cid).judged and cell.mean is not None for cid, cell in row.values.items())
    if judged and not _judges_match(table, row):
        problems.append(f"judge {' + '.join(row.judge)!r} (table: {' + '.join(table.judges)!r})")
    if judged and table.examples_model and row.examples_model is not None and row.examples_model != table.examples_model:
        problems.append(f"examples model {row.examples_model!r} (table: {table.examples_model!r})")
    if row.settings:
        for path, value in table.required.items():
            if row.settings.get(path) != value:
                problems.append(f"{path} {_published(row.settings.get(path))} (table: {_published(value)})")
    if first is not None and first is not row and row.settings and first.settings:
        # Rows beside each other must have been measured alike, as in `rbe compare`.
        patterns = (*row.non_blocking, *first.non_blocking)
        for diff in comparability.differences(first.settings, row.settings, patterns):
            if diff.blocking:
                problems.append(f"{diff.name} {comparability.short(diff.b)} (row {first.label!r}: {comparability.short(diff.a)})")
    mismatch = "; ".join(problems)
    if mismatch and not allow_mismatch:
        raise UsageError(
            f"measured row {row.label!r} does not match {table.name}: {mismatch}. Numbers measured with a "
            "different protocol, judge or setting are not comparable; pass allow_mismatch=True to show it anyway, flagged."
        )
    # Shown in any case, flagged: measured on other terms than the published numbers.
    notes = [
        f"{path} {_published(row.settings.get(path))} (published: {_published(value)})"
        for path, value in table.flagged.items()
        if row.settings and row.settings.get(path) != value
    ]
    return CheckedRow(row=row, mismatch="; ".join(problems + notes))


# --------------------------------------------------------------------------------------------------
# Rendering (the formats themselves are in paper_table_render)


def render_table(
    name: str,
    measured: Sequence[MeasuredRow | Mapping[str, Any]] = (),
    *,
    fmt: str = "markdown",
    allow_mismatch: bool = False,
) -> str:
    """The paper's table `name` (published rows first, then `measured`) as markdown, latex or csv.

    Measured rows are MeasuredRow objects or dicts for MeasuredRow.from_dict. A row whose protocol,
    judge or examples model (for judged columns), required published setting, or measurement
    settings (against the first measured row) differ raises UsageError unless `allow_mismatch`, in
    which case it is flagged (‡ and a footnote; `mismatch` column in CSV). A row differing from the
    published `flagged` settings (unscored policy, number of personas) is always flagged.
    """
    if fmt not in OUTPUT_FORMATS:
        raise unknown("table format", fmt, OUTPUT_FORMATS)
    table = load_table(name)
    rows = [row if isinstance(row, MeasuredRow) else MeasuredRow.from_dict(row) for row in measured]
    checked = [_check_row(table, row, allow_mismatch, rows[0]) for row in rows]
    return paper_table_render.render(table, checked, fmt)
