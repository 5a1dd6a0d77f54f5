"""Rendering of the RoleLLM, PersonaGym and OpenCharacter paper tables: markdown, LaTeX and CSV.

`paper_tables` holds the table model (PaperTable, MeasuredRow, Cell, loading the shipped reference
JSON) and decides which measured rows may stand beside the published ones (refused or flagged);
this module only prints a table whose measured rows have been checked there, in each paper's own
number format. It is separate so that the comparability rules and the output formats can change
apart; it imports the model only for type annotations, so `paper_tables` can re-export its names
(`format_cell`, `latex_escape`, the marks, `OUTPUT_FORMATS`) without an import cycle.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from rolebench_eval.errors import DataError

if TYPE_CHECKING:
    from rolebench_eval.analysis.paper_tables import Cell, CheckedRow, Column, PaperTable

OUTPUT_FORMATS: tuple[str, ...] = ("markdown", "latex", "csv")

PUBLISHED_MARK = "†"
MISMATCH_MARK = "‡"
# The mark LaTeX needs for the same symbols; the raw characters need a Unicode-aware engine.
_LATEX_MARKS = {PUBLISHED_MARK: r"$^\dagger$", MISMATCH_MARK: r"$^\ddagger$"}


# --------------------------------------------------------------------------------------------------
# Number formats (each table's own style)


def format_cell(cell: Cell | None, column: Column) -> str:
    """A cell as the paper prints it; '-' where the paper (or the measurement) has no number."""
    if cell is None or cell.mean is None:
        return "-"
    if column.format == "percent":
        text = f"{cell.mean:.2f}"
        return text if cell.std is None else f"{text} ({cell.std:.2f})"
    if column.format == "rouge":
        text = f"{cell.mean:.4f}"
        return text if cell.std is None else f"{text} ({cell.std:.4f})"
    if column.format in ("mean_std", "mean_std_short"):
        text = f"{cell.mean:.2f}"
        if cell.std is None:
            return text
        std = f"{cell.std:.2f}"
        if column.format == "mean_std_short" and std.startswith("0."):
            std = std[1:]  # OpenCharacter prints "(.27)"; PersonaGym Table 1 keeps "(0.80)"
        return f"{text} ({std})"
    raise DataError(f"column {column.id!r} has an unknown number format {column.format!r}.")


# --------------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class _DisplayRow:
    model: str
    size: str
    cells: tuple[str, ...]
    source: str  # "published", "measured"
    mark: str  # PUBLISHED_MARK, MISMATCH_MARK or ""


def _display_rows(table: PaperTable, checked: Sequence[CheckedRow]) -> tuple[list[_DisplayRow], list[_DisplayRow]]:
    published = [
        _DisplayRow(
            model=row.model,
            size=row.size or "-",
            cells=tuple(format_cell(row.values.get(column.id), column) for column in table.columns),
            source="published",
            mark=PUBLISHED_MARK,
        )
        for row in table.rows
    ]
    measured = [
        _DisplayRow(
            model=item.row.label,
            size=item.row.size or "-",
            cells=tuple(format_cell(item.row.values.get(column.id), column) for column in table.columns),
            source="measured",
            mark=MISMATCH_MARK if item.mismatch else "",
        )
        for item in checked
    ]
    return published, measured


def _footnotes(table: PaperTable, checked: Sequence[CheckedRow]) -> list[tuple[str, str]]:
    notes = [(PUBLISHED_MARK, f"Published: {table.citation.text()}.")]
    for item in checked:
        if item.mismatch:
            notes.append((MISMATCH_MARK, f"{item.row.label}: not comparable, {item.mismatch}."))
    return notes


def _caption(table: PaperTable) -> str:
    return f"{table.title} (protocol {table.protocol}; judge {' + '.join(table.judges)}; {table.statistic})"


def _headers(table: PaperTable) -> list[str]:
    return ["model"] + (["size"] if table.has_size else []) + [c.label for c in table.columns] + ["source"]


def _cells(table: PaperTable, row: _DisplayRow, mark: str) -> list[str]:
    return [row.model] + ([row.size] if table.has_size else []) + list(row.cells) + [row.source + mark]


def _markdown(table: PaperTable, checked: Sequence[CheckedRow]) -> str:
    published, measured = _display_rows(table, checked)
    headers = _headers(table)
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731 - a '|' in a label would split the row
    align = ["---"] + (["---"] if table.has_size else []) + ["---:"] * len(table.columns) + ["---"]
    lines = [f"**{escape(_caption(table))}**", "", "| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(escape(c) for c in _cells(table, row, row.mark)) + " |" for row in published]
    if measured:
        # Markdown has no mid-rule; a labelled row is the visible separator.
        lines.append("| " + " | ".join(["*measured (this harness)*"] + [""] * (len(headers) - 1)) + " |")
        lines += ["| " + " | ".join(escape(c) for c in _cells(table, row, row.mark)) + " |" for row in measured]
    lines.append("")
    lines += [f"{mark} {escape(text)}" + "  " for mark, text in _footnotes(table, checked)]
    return "\n".join(lines).rstrip() + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in one pass (so the backslashes we add are not re-escaped)."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def _latex(table: PaperTable, checked: Sequence[CheckedRow]) -> str:
    published, measured = _display_rows(table, checked)
    headers = _headers(table)
    spec = "l" + ("l" if table.has_size else "") + "r" * len(table.columns) + "l"

    def line(row: _DisplayRow) -> str:
        cells = [latex_escape(c) for c in _cells(table, row, "")]
        cells[-1] += _LATEX_MARKS.get(row.mark, "")
        return " & ".join(cells) + r" \\"

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    lines += [line(row) for row in published]
    if measured:
        lines.append(r"\midrule")
        lines += [line(row) for row in measured]
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = " ".join(f"{_LATEX_MARKS[mark]} {latex_escape(text)}" for mark, text in _footnotes(table, checked))
    lines.append(rf"\caption{{{latex_escape(_caption(table))}. {notes}}}")
    lines.append(rf"\label{{tab:{table.name.replace('_', '-')}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _csv(table: PaperTable, checked: Sequence[CheckedRow]) -> str:
    # Machine-readable: raw numbers (not the paper's rounding), one mean/std/n column triple per
    # table column, and `source` to tell published from measured rows.
    records = []

    def record(source: str, model: str, size: str | None, protocol: str, judges: Iterable[str],
               values: Mapping[str, Cell], mismatch: str) -> dict[str, Any]:
        result: dict[str, Any] = {
            "table": table.name,
            "source": source,
            "model": model,
            "size": size,
            "protocol": protocol,
            "judge": "+".join(judges),
            "flagged": bool(mismatch),  # True: not comparable with the published rows (reason in `mismatch`)
            "mismatch": mismatch,
        }
        for column in table.columns:
            cell = values.get(column.id)
            result[f"{column.id}_mean"] = cell.mean if cell is not None else None
            result[f"{column.id}_std"] = cell.std if cell is not None else None
            result[f"{column.id}_n"] = cell.n if cell is not None else None
        return result

    for row in table.rows:
        records.append(record("published", row.model, row.size, table.protocol, table.judges, row.values, ""))
    for item in checked:
        row = item.row
        records.append(record("measured", row.label, row.size, row.protocol, row.judge, row.values, item.mismatch))
    frame = pd.DataFrame.from_records(records)
    for column in table.columns:
        frame[f"{column.id}_n"] = frame[f"{column.id}_n"].astype("Int64")  # counts stay integers beside NaN
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def render(table: PaperTable, checked: Sequence[CheckedRow], fmt: str) -> str:
    """`table` with its checked measured rows as `fmt` (one of OUTPUT_FORMATS; not checked here)."""
    if fmt == "markdown":
        return _markdown(table, checked)
    if fmt == "latex":
        return _latex(table, checked)
    return _csv(table, checked)
