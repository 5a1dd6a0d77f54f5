"""Number formats of the papers' tables."""

from __future__ import annotations

from typing import Any


def short_std(std: float) -> str:
    """OpenCharacter's std style: `.27`, `1.00`."""
    text = f"{std:.2f}"
    return text[1:] if text.startswith("0.") else text


def format_metric(summary: dict[str, Any] | None, kind: str) -> str:
    """`4.66 (.27)` for judge scores, `0.5764` for ROUGE, `55.82` (percent) for win rates."""
    if not summary or summary.get("mean") is None:
        return "—"
    mean = summary["mean"]
    if kind == "likert":
        return f"{mean:.2f} ({short_std(summary['std'])})"
    if kind == "verdict":
        return f"{100 * mean:.2f}"
    return f"{mean:.4f}"


def format_ci(summary: dict[str, Any] | None, kind: str) -> str:
    if not summary or not summary.get("ci95"):
        return "—"
    low, high = summary["ci95"]
    if kind == "verdict":
        return f"[{100 * low:.2f}, {100 * high:.2f}]"
    digits = 2 if kind == "likert" else 4
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])
