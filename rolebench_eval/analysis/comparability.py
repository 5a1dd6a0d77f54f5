"""What a run measured, derived from its manifest: the settings two runs must share to be compared.

Every leaf of a task's manifest entry (flattened to dotted paths: `rouge.reference_policy`,
`protocol.judge_batch_size`, `data.questions_sha256`, ...) is a measurement setting, plus the
run-level identities that change a score: the judges of the task and the model that wrote the score
examples. Nothing is listed by hand, so a new task's settings are checked as soon as it writes them.

Settings that only change *which* units were sampled or how they are described do not block a
comparison; they are shown. The engine treats every `seed` and `description` as such; a task names
its own in its manifest entry as a top-level list of path patterns, e.g.
`"non_blocking": ["data.limit", "data.n_personas", "data.n_items.*"]` (fnmatch patterns; a pattern
also covers everything under it). The model under test (identity, backend options) is what a
comparison compares, so it is not part of these settings at all; its role-play template and answer
parameters are in the task manifest and are measurement settings: the benchmark prescribes them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Sampling-only or prose: differences are shown, never blocking.
ENGINE_NON_BLOCKING: tuple[str, ...] = ("seed", "*.seed", "description", "*.description")
NON_BLOCKING_KEY = "non_blocking"
JUDGES_PATH = "run.judges"
EXAMPLES_PATH = "run.examples_model"
# Clearer names in messages for a few paths; any other path is named as itself.
_DISPLAY = {
    "protocol.name": "protocol",
    "version": "task version",
    "unscored_policy": "unscored policy",
    JUDGES_PATH: "judge set",
    EXAMPLES_PATH: "examples model",
    "run.user_model": "user model (the simulated user; comparing runs that differ only here is a simulator-sensitivity report)",
    "run.baseline_model": "baseline model",
}
# A task that calls dialogue roles lists them in its manifest (`"dialogue_roles": ["user"]`): the
# models bound to them shape its numbers, so their identities are measurement settings too.
DIALOGUE_ROLES_KEY = "dialogue_roles"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to {dotted.path: leaf}; lists and scalars are leaves."""
    if not isinstance(data, Mapping):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def _identities(manifest: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(j.get("label")): str(j.get("identity") or j.get("label"))
        for j in manifest.get("judges") or []
        if isinstance(j, Mapping)
    }


def measurement_settings(
    task_manifest: Mapping[str, Any],
    run_manifest: Mapping[str, Any],
    judge_labels: Sequence[str],
) -> dict[str, Any]:
    """Every setting that can change the task's numbers, as {path: value}.

    `judge_labels` are the judges that scored this task (results.json: empty when it used none);
    the identity (endpoint, weights hash) catches two different judges given the same label.
    """
    settings = {path: value for path, value in flatten(task_manifest).items() if path.split(".")[0] != NON_BLOCKING_KEY}
    if judge_labels:
        identities = _identities(run_manifest)
        settings[JUDGES_PATH] = sorted(
            f"{label} [{identities[label]}]" if identities.get(label) not in (None, label) else str(label)
            for label in judge_labels
        )
        examples = run_manifest.get("examples_model")
        if isinstance(examples, Mapping):
            settings[EXAMPLES_PATH] = str(examples.get("identity") or examples.get("label"))
        elif examples is not None:
            settings[EXAMPLES_PATH] = str(examples)
    for role in task_manifest.get(DIALOGUE_ROLES_KEY) or ():
        bound = run_manifest.get(f"{role}_model")
        if isinstance(bound, Mapping):
            settings[f"run.{role}_model"] = str(bound.get("identity") or bound.get("label"))
    return settings


def task_measurement_settings(
    results_task: Mapping[str, Any], task_manifest: Mapping[str, Any], run_manifest: Mapping[str, Any]
) -> dict[str, Any]:
    """measurement_settings for one task of a run, from its results.json and manifest.json entries."""
    settings = measurement_settings(task_manifest, run_manifest, [str(j) for j in results_task.get("judges") or []])
    # results.json carries these even when the manifest is gone (an old baseline file).
    for path, key in (("version", "version"), ("unscored_policy", "unscored_policy"), ("protocol.name", "protocol")):
        if path not in settings and results_task.get(key) is not None:
            settings[path] = results_task.get(key)
    return settings


def non_blocking_patterns(*task_manifests: Mapping[str, Any]) -> tuple[str, ...]:
    """The engine's patterns plus those every given task manifest declares."""
    declared: list[str] = []
    for manifest in task_manifests:
        value = manifest.get(NON_BLOCKING_KEY) or []
        declared += [str(p) for p in value] if isinstance(value, (list, tuple)) else []
    return ENGINE_NON_BLOCKING + tuple(dict.fromkeys(declared))


def is_non_blocking(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) or path.startswith(p + ".") for p in patterns)


def display_name(path: str) -> str:
    if path in _DISPLAY:
        return _DISPLAY[path]
    if "sha256" in path or "hash" in path:
        return f"data hash {path}"
    return f"setting {path}"


@dataclass(frozen=True)
class Difference:
    path: str
    a: Any
    b: Any
    blocking: bool

    @property
    def name(self) -> str:
        return display_name(self.path)


_MISSING = object()


def differences(a: Mapping[str, Any], b: Mapping[str, Any], patterns: Iterable[str]) -> list[Difference]:
    """Paths whose values differ (a path only one side has differs too), blocking ones first."""
    patterns = tuple(patterns)
    found = []
    for path in sorted(set(a) | set(b)):
        va, vb = a.get(path, _MISSING), b.get(path, _MISSING)
        if va != vb:
            found.append(Difference(path, None if va is _MISSING else va, None if vb is _MISSING else vb,
                                    not is_non_blocking(path, patterns)))
    return sorted(found, key=lambda d: not d.blocking)


def blocking_key(settings: Mapping[str, Any], patterns: Iterable[str]) -> str:
    """A short hash of the blocking settings: runs with the same key measured the same thing."""
    patterns = tuple(patterns)
    kept = {path: value for path, value in settings.items() if not is_non_blocking(path, patterns)}
    text = json.dumps(kept, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def short(value: Any) -> str:
    """A value for a one-line message: a hash by its prefix, anything long cut."""
    if isinstance(value, str) and len(value) >= 40 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value[:12] + "..."
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
