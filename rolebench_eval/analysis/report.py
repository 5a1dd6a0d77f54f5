"""Short reports of one run: the terminal summary and report.md."""

from __future__ import annotations

from typing import Any

from rolebench_eval.analysis.formatting import format_ci, format_metric, markdown_table, text_table
from rolebench_eval.analysis.judge_reliability import summary_lines


def metric_rows(task: dict[str, Any]) -> list[list[str]]:
    rows = []
    names = task.get("metric_names", {})
    kinds = task.get("metric_kinds", {})
    for key, summary in task.get("metrics", {}).items():
        kind = kinds.get(key, "continuous")
        if summary is None or "mean" not in summary:
            rows.append([names.get(key, key), "not computed", "—", "0", "—", summary.get("reason", "") if summary else ""])
            continue
        rows.append(
            [
                names.get(key, key),
                format_metric(summary, kind),
                format_ci(summary, kind),
                str(summary.get("n", 0)),
                str(summary.get("n_unscored", 0)),
                summary.get("reason", "") or "",
            ]
        )
    return rows


HEADER = ["metric", "mean (std)", "95% CI", "n", "unscored", "note"]


def _judges(results: dict[str, Any], task: dict[str, Any]) -> str:
    return ", ".join(task.get("judges") or []) or "none"


def render_terminal(results: dict[str, Any]) -> str:
    parts = []
    if results.get("smoke_judge"):
        parts.append(f"!! {results['smoke_warning']}")
    for name, task in results["tasks"].items():
        parts.append(
            f"\n{name}  (model {results['model']['label']}, protocol {task.get('protocol') or '-'}, "
            f"judge {_judges(results, task)}, unscored policy {task.get('unscored_policy') or '-'})"
        )
        parts.append(text_table(HEADER, metric_rows(task)))
        items = task.get("items")
        if items:
            parts.append(_items_line(items))
        for warning in task.get("warnings", []):
            parts.append(f"warning: {warning}")
    calls = calls_lines(results)
    if calls:
        parts += ["", *calls]
    return "\n".join(parts)


def _reasons(reasons: dict[str, int] | None) -> str:
    # Every reason with its count: the rare one is often the one that explains a number.
    return " (" + "; ".join(f"{count}x {reason}" for reason, count in reasons.items()) + ")" if reasons else ""


def _items_line(items: dict[str, Any]) -> str:
    line = f"items: {items['n']}, {items['n_scored']} scored, {items['n_unscored']} unscored"
    line += _reasons(items.get("unscored_reasons"))
    if items.get("empty_answers"):
        line += f"; {items['empty_answers']} empty answer(s), judged as given"
    judgments = items.get("judgments")
    if judgments:
        line += (
            f"; judgments: {judgments['n']}, {judgments['n_scored']} scored, "
            f"{judgments['n_unscored']} unscored{_reasons(judgments.get('unscored_reasons'))}"
        )
    return line


def _usd(cost: float) -> str:
    # Cents hide what a small run costs; four decimals show it without a long tail.
    return f"${cost:,.2f}" if cost >= 100 else f"${cost:.4f}"


def cost_line(calls: dict[str, Any]) -> str | None:
    """Tokens and estimated cost of the whole run, or None for a results file that predates them."""
    total = calls["total"]
    if "prompt_tokens" not in total:
        return None
    line = f"tokens: {total['prompt_tokens']:,} prompt + {total['completion_tokens']:,} completion"
    if total.get("usage_missing"):
        # Not added as 0: the sums above leave these calls out, and say so.
        line += f" ({total['usage_missing']} call(s) without usage)"
    no_price = total.get("no_price") or []
    as_of = f"prices as of {calls.get('prices_as_of', '?')}"
    if total.get("cost_usd") is None:
        line += f"; estimated cost: unknown (no price for {', '.join(no_price) or 'any model'})"
    else:
        line += f"; estimated cost: {_usd(total['cost_usd'])} ({as_of}"
        line += f"; no price: {', '.join(no_price)})" if no_price else ")"
    return line


def _row_cost(row: dict[str, Any]) -> str:
    if "prompt_tokens" not in row:
        return ""
    parts = [f"{row['prompt_tokens']:,}+{row['completion_tokens']:,} tokens"]
    if row.get("usage_missing"):
        parts.append(f"{row['usage_missing']} without usage")
    parts.append("no price" if row.get("cost_usd") is None else _usd(row["cost_usd"]))
    if row.get("wall_s") is not None:
        parts.append(f"{row['wall_s']:.1f}s")
    if row.get("completion_tokens_per_s") is not None:
        parts.append(f"{row['completion_tokens_per_s']:,.1f} tok/s")
    if row.get("calls_per_s") is not None:
        parts.append(f"{row['calls_per_s']:,.2f} calls/s")
    return "; " + ", ".join(parts)


def row_cost_cells(row: dict[str, Any]) -> list[str]:
    """A calls row's tokens, cost, wall time and throughput as table cells ("—" when unknown)."""
    if "prompt_tokens" not in row:
        return ["—"] * 4
    tokens = f"{row['prompt_tokens']:,} + {row['completion_tokens']:,}"
    if row.get("usage_missing"):
        tokens += f" ({row['usage_missing']} without usage)"
    cost = "no price" if row.get("cost_usd") is None else _usd(row["cost_usd"])
    wall = "—" if row.get("wall_s") is None else f"{row['wall_s']:.1f}s"
    rates = []
    if row.get("completion_tokens_per_s") is not None:
        rates.append(f"{row['completion_tokens_per_s']:,.1f} tok/s")
    if row.get("calls_per_s") is not None:
        rates.append(f"{row['calls_per_s']:,.2f} calls/s")
    return [tokens, cost, wall, ", ".join(rates) or "—"]


def calls_lines(results: dict[str, Any]) -> list[str]:
    """The calls section as lines: one per role and stage, with every retried or failed reason,
    tokens, estimated cost, wall time and throughput."""
    calls = results.get("calls")
    if not calls:
        return []
    total = calls["total"]
    lines = [
        f"calls: {total['made']} made, {total['reused']} reused, {total['failed']} failed, "
        f"{total['retried_attempts']} retried attempt(s)"
        + (f", {total['empty_answers']} empty answer(s)" if total.get("empty_answers") else "")
        + (f", {total['not_sent']} not sent" if total.get("not_sent") else "")
    ]
    cost = cost_line(calls)
    if cost:
        lines.append(f"  {cost}")
    for row in calls["by_role"]:
        line = (
            f"  {row['role']} ({row['model']}) {row['stage']}: {row['made']} made, {row['reused']} reused, "
            f"{row['failed']} failed, {row['retried_attempts']} retried"
        )
        if row.get("empty_answers"):
            line += f", {row['empty_answers']} empty"
        if row.get("not_sent"):
            line += f", {row['not_sent']} not sent"
        line += _row_cost(row)
        if row.get("attempt_errors"):
            line += "; retried after" + _reasons(row["attempt_errors"])
        if row.get("failure_reasons"):
            line += "; failed:" + _reasons(row["failure_reasons"])
        lines.append(line)
    for reason in results.get("incomplete") or []:
        lines.append(f"INCOMPLETE: {reason}")
    return lines


def render_run_report(results: dict[str, Any]) -> str:
    lines = [f"# rolebench-eval run {results['run_id']}", ""]
    if results.get("smoke_judge"):
        lines += [f"> **{results['smoke_warning']}**", ""]
    lines += [
        f"- model: `{results['model']['label']}` ({results['model']['backend']})",
        f"- judges: {', '.join(j['label'] for j in results['judges']) or 'none'}",
        f"- examples model: {results.get('examples_model') or '-'}",
        f"- configuration hash: `{results['config_hash']}` (everything that can change a number is in manifest.json)",
    ]
    for deviation in results.get("deviations", []):
        lines.append(f"- deviation: {deviation}")
    for name, task in results["tasks"].items():
        lines += [
            "",
            f"## {name}",
            "",
            f"protocol `{task.get('protocol') or '-'}`, role-play template `{task.get('roleplay_template') or '-'}`, "
            f"unscored policy `{task.get('unscored_policy') or '-'}`. Mean and population std over "
            "units (personas or items), 95% percentile-bootstrap CI.",
            "",
            markdown_table(HEADER, metric_rows(task)),
        ]
        if task.get("items"):
            lines += ["", _items_line(task["items"])]
        agreement = task.get("judge_agreement")
        if agreement:
            for pair in agreement["pairs"]:
                lines.append(
                    f"- agreement {pair['judges'][0]} vs {pair['judges'][1]}: n={pair['n_both_scored']}, "
                    f"exact {pair.get('exact_agreement', '—')}, mean |diff| {pair.get('mean_abs_difference', '—')}, "
                    f"Spearman {pair.get('spearman', '—')}"
                )
        # Judge reliability (analysis/judge_reliability.py; the README says what each figure means).
        lines += [f"- {line}" for line in summary_lines(task.get("reliability"))]
        for warning in task.get("warnings", []):
            lines.append(f"- warning: {warning}")
    calls = calls_lines(results)
    if calls:
        lines += ["", "## Model calls", "", *(f"- {line.strip()}" for line in calls)]
    lines += ["", "Per-sample records (prompt, answer, judge prompt, judge reply, parsed score): `samples.jsonl`, "
              "whose texts of calls refer to `calls/*.jsonl`; "
              "`rolebench_eval.analysis.run_samples.iter_samples(RUN_DIR)` reads them with every text in place.", ""]
    return "\n".join(lines)
