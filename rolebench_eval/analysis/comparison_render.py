"""Rendering of paired comparisons and regression gates: strict JSON dicts, markdown and text tables.

Owns the output formats of `rbe compare` / `rbe regress`; the numbers come from `paired_stats`
and `regression_gates`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pandas as pd

from rolebench_eval.analysis.paired_stats import SCHEMA_VERSION, Comparison
from rolebench_eval.analysis.regression_gates import GateResult


def _json_number(value: float) -> float | str | None:
    # JSON has no NaN/inf; None for NaN and a string for infinities keep the file strict-JSON.
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def comparison_to_dict(comparison: Comparison) -> dict[str, Any]:
    """A JSON-serialisable dict (strict JSON: NaN -> null, inf -> "inf")."""

    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return _json_number(value)
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        return value

    return clean(dataclasses.asdict(comparison))


def gate_to_dict(gate: GateResult) -> dict[str, Any]:
    """A JSON-serialisable dict of a gate result, with the overall verdict."""
    return {
        "schema_version": SCHEMA_VERSION,
        "label_a": gate.label_a,
        "label_b": gate.label_b,
        "passed": gate.passed,
        "decisions": [dataclasses.asdict(decision) for decision in gate.decisions],
    }


def _rows(comparison: Comparison) -> list[dict[str, str]]:
    def p_text(p: float) -> str:
        return "<1e-4" if p < 1e-4 else f"{p:.4f}"

    rows = []
    for item in comparison.metrics:
        rows.append(
            {
                "metric": item.metric,
                "kind": item.kind,
                "n": str(item.n_paired) + (f" (+{item.n_only_a}/+{item.n_only_b})" if item.n_only_a or item.n_only_b else ""),
                f"a: {comparison.label_a}": f"{item.mean_a:.4f}",
                f"b: {comparison.label_b}": f"{item.mean_b:.4f}",
                "diff": f"{item.diff:+.4f}",
                "95% CI": f"[{item.ci95[0]:+.4f}, {item.ci95[1]:+.4f}]",
                "test": item.test.split("(")[0].split(":")[0],
                "p": p_text(item.p_value),
                f"p_adj ({comparison.correction})": p_text(item.p_adjusted),
                "sig": "yes" if item.significant else "no",
            }
        )
    return rows


def _footer(comparison: Comparison) -> str:
    first = comparison.metrics[0]
    return (
        "diff = b - a, paired on the units both runs scored (n; +only in a/+only in b); "
        f"CI: bootstrap of the mean difference, {first.n_resamples} resamples, seed {first.seed}; "
        f"significant: p_adj <= {comparison.alpha:g} after {comparison.correction} correction."
    )


def comparison_to_markdown(comparison: Comparison) -> str:
    """A GitHub-flavoured markdown table, one row per metric, with a legend line below."""
    rows = _rows(comparison)
    header = list(rows[0])
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731 - a cell must not split the row
    lines = [
        "| " + " | ".join(escape(h) for h in header) + " |",
        "| " + " | ".join("---" if h in ("metric", "kind", "test", "sig") else "---:" for h in header) + " |",
    ]
    lines += ["| " + " | ".join(escape(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + _footer(comparison) + "\n"


def comparison_to_text(comparison: Comparison) -> str:
    """A plain aligned table for the terminal (pandas does the alignment)."""
    frame = pd.DataFrame(_rows(comparison))
    return frame.to_string(index=False) + "\n" + _footer(comparison) + "\n"
