"""rolebench-eval: an evaluation harness for role-playing language models.

The Python API (`rolebench_eval.api`): `run`, `load_run`, `load_runs`, `compare`,
`unit_differences` and `Run`, importable from here. They are loaded on first use, so that
`import rolebench_eval` (and every `rbe` command) stays fast and imports neither pandas nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("Run", "compare", "load_run", "load_runs", "run", "unit_differences")

if TYPE_CHECKING:
    from rolebench_eval.api import Run, compare, load_run, load_runs, run, unit_differences  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _API:
        from rolebench_eval import api

        return getattr(api, name)
    raise AttributeError(f"module 'rolebench_eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]
