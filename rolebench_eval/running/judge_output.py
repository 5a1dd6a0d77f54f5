"""--judge-output free|guided: which judging roles get replies constrained to the protocol's format.

Guided output is a deviation from every protocol (the papers' judges wrote free text), so it is
never the default for a real judge: `free` unless asked. The embedded smoke judge is the exception:
a 135M model almost never writes the score sentence on its own, so by default it is guided and the
quickstart shows a full (still meaningless, still labelled) table. Each task that can guide states
its formats (regexes on its requests) and records `judge_output` in its manifest entry, which puts
the choice in the configuration hash and makes `compare`/`regress` refuse to mix guided and free
runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rolebench_eval.backends.guided import JUDGE_OUTPUTS
from rolebench_eval.errors import UsageError
from rolebench_eval.models import ModelSpec

# Backends that can constrain decoding to a regex (lm-eval's wrapper cannot).
GUIDED_BACKENDS: tuple[str, ...] = ("hf", "vllm", "openai")
MANIFEST_KEY = "judge_output"


def guided_roles(
    choice: str | None,
    judges: Sequence[tuple[str, ModelSpec]],
    examples: ModelSpec | None,
    deviations: list[str],
) -> tuple[str, ...]:
    """The roles ("judge:<label>", "examples") whose replies are guided, with the deviation noted.

    `choice`: "free", "guided", or None (the default: guided for the embedded smoke judge only).
    `judges`: (role, spec) of every judge; `examples`: the model writing score examples (the
    first judge unless --examples-model), None when no task needs one.
    """
    if choice is not None and choice not in JUDGE_OUTPUTS:
        raise UsageError(f"--judge-output {choice!r}: choose one of {', '.join(JUDGE_OUTPUTS)}")
    candidates = [*judges, *([("examples", examples)] if examples is not None else [])]
    if choice == "guided":
        for role, spec in candidates:
            if spec.backend not in GUIDED_BACKENDS:
                raise UsageError(
                    f"--judge-output guided: {role} ({spec.label}) uses the {spec.backend} backend, "
                    f"which cannot constrain its output; guided output needs one of "
                    f"{', '.join(GUIDED_BACKENDS)}"
                )
        roles = [role for role, _ in candidates]
    elif choice is None:
        roles = [role for role, spec in candidates if spec.smoke]
    else:
        roles = []
    if roles:
        why = "--judge-output guided" if choice == "guided" else (
            "the embedded smoke judge's default; --judge-output free to turn it off"
        )
        deviations.append(
            f"guided judge output for {', '.join(roles)} ({why}): replies constrained to the "
            "protocol's format by regex, a deviation from the protocol's free-text judging"
        )
    return tuple(dict.fromkeys(roles))


def check_tasks(
    choice: str | None,
    roles: Sequence[str],
    task_manifests: Mapping[str, Mapping[str, Any]],
    judged_tasks: Sequence[str],
    deviations: list[str],
) -> None:
    """Every judged task must apply guided output when the user asked for it; by default (the
    smoke judge) a task without guided formats is only noted."""
    if not roles:
        return
    lacking = [name for name in judged_tasks if MANIFEST_KEY not in task_manifests.get(name, {})]
    if not lacking:
        return
    if choice == "guided":
        raise UsageError(
            f"--judge-output guided: task {lacking[0]} has no guided format for its judge replies; "
            "use --judge-output free"
        )
    deviations.append(f"judge replies of {', '.join(lacking)} are free text (no guided format)")


def task_entry(settings_roles: Sequence[str], used_roles: Sequence[str]) -> dict[str, str] | None:
    """A task's manifest value: role -> "guided" for the roles it guides; None when none is."""
    guided = [role for role in used_roles if role in settings_roles]
    return {role: "guided" for role in guided} or None
