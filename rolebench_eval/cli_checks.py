"""Checks of `rbe` flags made before any model call and before any file is written.

A flag that cannot take effect is refused rather than recorded: `--concurrency 32` with a local hf
model, or `--tensor-parallel-size 2` with an endpoint, would otherwise sit in manifest.json as if
it had shaped the run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rolebench_eval.errors import UsageError


def positive_int(text: str) -> int:
    """argparse type of counts (--limit, --batch-size, --resamples...): a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value

# flag -> (argparse dest, backends that read it). A flag left at its default is never refused; a
# non-default value is refused when no model of the run (the model under test, a judge, the
# examples model) uses one of its backends. Read from rolebench_eval/backends/*.py.
BACKEND_FLAGS: dict[str, tuple[str, frozenset[str]]] = {
    "--batch-size": ("batch_size", frozenset({"hf", "lm-eval"})),
    "--concurrency": ("concurrency", frozenset({"openai"})),
    "--max-concurrency": ("max_concurrency", frozenset({"openai"})),
    "--request-timeout": ("request_timeout", frozenset({"openai"})),
    "--max-retry-time": ("max_retry_time", frozenset({"openai"})),
    "--device": ("device", frozenset({"hf", "lm-eval"})),
    "--dtype": ("dtype", frozenset({"hf", "vllm"})),
    "--chat-template": ("chat_template", frozenset({"hf", "vllm", "lm-eval"})),
    "--system-prompt-policy": ("system_prompt_policy", frozenset({"hf", "vllm", "lm-eval"})),
    "--overlength-policy": ("overlength_policy", frozenset({"hf", "vllm", "lm-eval"})),
    "--tensor-parallel-size": ("tensor_parallel_size", frozenset({"vllm"})),
    "--pipeline-parallel-size": ("pipeline_parallel_size", frozenset({"vllm"})),
    "--data-parallel-size": ("data_parallel_size", frozenset({"vllm"})),
    "--distributed-executor-backend": ("distributed_executor_backend", frozenset({"vllm"})),
    "--enforce-eager": ("enforce_eager", frozenset({"vllm"})),
    "--max-model-len": ("max_model_len", frozenset({"vllm"})),
}
# Flags that only the model under test reads (judges are named with their own spec).
MODEL_FLAGS: dict[str, tuple[str, frozenset[str]]] = {
    "--model-args": ("model_args", frozenset({"lm-eval"})),
}


def positive_float(text: str) -> float:
    """argparse type: a number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a probability strictly between 0 and 1 (a significance level)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def check_not_blank(values: Mapping[str, Any]) -> None:
    """Refuse an empty or blank value: `--judge ""` would otherwise name the current folder."""
    for flag, value in values.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is not None and not str(item).strip():
                raise UsageError(f"{flag}: empty value; give a model name, path or URL, or leave the flag out")


def check_backend_flags(
    args: argparse.Namespace, defaults: Mapping[str, Any], model_backend: str, all_backends: Iterable[str]
) -> None:
    """Refuse a non-default backend flag that no model of this run reads."""
    used = set(all_backends)
    for table, backends_in_use in ((BACKEND_FLAGS, used), (MODEL_FLAGS, {model_backend})):
        for flag, (dest, readers) in table.items():
            value = getattr(args, dest, None)
            if value == defaults.get(dest) or readers & backends_in_use:
                continue
            raise UsageError(
                f"{flag} applies to the {'/'.join(sorted(readers))} backend{'s' if len(readers) > 1 else ''} "
                f"only; this run uses {', '.join(sorted(backends_in_use))}. Leave it out (it would change nothing)"
            )


def check_concurrency_flags(args: argparse.Namespace, defaults: Mapping[str, Any]) -> None:
    """--max-concurrency caps adaptive concurrency; with --concurrency pinned it would change nothing."""
    if getattr(args, "concurrency", None) is not None and args.max_concurrency != defaults.get("max_concurrency"):
        raise UsageError(
            f"--max-concurrency {args.max_concurrency} caps adaptive concurrency, and --concurrency "
            f"{args.concurrency} pins it: give one of them"
        )


def check_prices(prices: list[str]) -> None:
    """Every `--price MODEL=IN,OUT` parses, and no model is priced twice (a one-line UsageError)."""
    from rolebench_eval.scheduling.pricing import price_table

    price_table(prices)


def _writable(folder: Path) -> str | None:
    """Why files cannot be created in `folder`, or None. A real probe, not os.access: access()
    says yes to root on a read-only mount's files and knows nothing of quotas or ACLs."""
    try:
        handle, name = tempfile.mkstemp(prefix=".rbe-write-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(handle)
    os.unlink(name)
    return None


def check_results_dir(path: Path, *, must_exist: bool, flag: str = "--results-dir") -> None:
    """A results folder rbe can use: an existing folder (when `must_exist`), or one it can create
    and write; checked before anything is computed, so that nothing is lost at the end."""
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {path}: is a file, not a folder")
        if not must_exist and (why := _writable(path)):
            raise UsageError(f"{flag} {path}: cannot write in it ({why})")
        return
    if must_exist:
        raise UsageError(f"{flag} {path}: no such folder")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
    if why := _writable(parent):
        raise UsageError(f"{flag} {path}: cannot create it in {parent} ({why})")
