"""Synthetic run directories with known per-unit values, in the schema `rbe run` writes.

Tests of `rbe compare`, `rbe regress`, `rbe table` and `rbe report` need finished runs with real
numbers; the embedded judge rarely produces a score, so these are built directly: manifest.json,
results.json (metrics summarised with the runner's own `summarize`) and samples.jsonl.

Test modules put this folder on sys.path before importing it: pytest runs with
--import-mode=importlib, which does not.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rolebench_eval.analysis.statistics import summarize

PERSONAGYM_METRICS = ("EA", "TC", "LH", "PC", "AJ")
JUDGE = "gpt-4o-2024-08-06"
# Untrusted model text: a report must show it, never execute it.
HOSTILE_ANSWER = '<script>document.title="pwned"</script><img src=x onerror="alert(1)"> & "quotes"'


@dataclass
class TaskFixture:
    name: str
    per_unit: dict[str, dict[str, Any]]
    kinds: dict[str, str]
    protocol: str = "opencharacter"
    judges: tuple[str, ...] = (JUDGE,)
    version: str = "1"
    data_hash: str = "q" * 64
    unscored_policy: str = "exclude"
    metric_names: dict[str, str] = field(default_factory=dict)
    # --task-option values given to the real task whose manifest the fixture writes.
    options: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    limit: int | None = None
    # Manifest leaves set after the real task wrote its manifest: {"data.questions": "..."}.
    manifest_overrides: dict[str, Any] = field(default_factory=dict)


def persona_values(n: int = 30, shift: float = 0.0, seed: int = 1, noise: float = 0.5,
                   base: Mapping[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """Per-persona scores on the 1-5 scale in steps of 0.25 (means of judged questions).

    With `base`, each value is base + shift + noise (clipped to 1..5): a paired second run.
    """
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, float]] = {}
    units = list(base) if base is not None else [f"persona {i:02d}: a retired sailor from Lisbon" for i in range(n)]
    for unit in units:
        row = {}
        for metric in PERSONAGYM_METRICS:
            start = base[unit][metric] if base is not None else float(rng.integers(8, 19)) / 4
            value = start + (shift + rng.normal(0, noise) if base is not None else 0.0)
            row[metric] = float(np.clip(np.round(value * 4) / 4, 1.0, 5.0))
        row["PersonaScore"] = float(np.mean([row[m] for m in PERSONAGYM_METRICS]))
        rows[unit] = row
    return rows


def personagym_task(per_unit: dict[str, dict[str, Any]], **options: Any) -> TaskFixture:
    kinds = {m: "likert" for m in (*PERSONAGYM_METRICS, "PersonaScore")}
    names = {"EA": "Expected Action", "TC": "Toxicity Control", "LH": "Linguistic Habits",
             "PC": "Persona Consistency", "AJ": "Action Justification", "PersonaScore": "PScore-L"}
    options.setdefault("name", "personagym-light")
    return TaskFixture(per_unit=per_unit, kinds=kinds, metric_names=names, **options)


def rolebench_values(n: int = 40, seed: int = 2, shift: float = 0.0,
                     base: Mapping[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Per-item ROUGE-L (CUS/RAW/SPE, one metric per item) and win/tie/loss verdicts."""
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, Any]] = {}
    items = list(base) if base is not None else [f"item-{i:03d}" for i in range(n)]
    for index, item in enumerate(items):
        metric = ("CUS", "RAW", "SPE")[index % 3]
        start = base[item][metric] if base is not None else float(rng.uniform(0.2, 0.7))
        value = float(np.clip(start + (shift + rng.normal(0, 0.05) if base is not None else 0.0), 0, 1))
        verdict = ("win", "tie", "loss")[int(rng.integers(0, 3))]
        # As tasks/rolebench stores them: plain win rate (tie = 0) and tie-adjusted (tie = 0.5).
        rows[item] = {metric: value, "win_rate": float(verdict == "win"),
                      "win_rate_tie_adjusted": {"win": 1.0, "tie": 0.5, "loss": 0.0}[verdict]}
    return rows


def rolebench_task(per_unit: dict[str, dict[str, Any]], **options: Any) -> TaskFixture:
    options.setdefault("name", "rolebench-en")
    options.setdefault("protocol", "rolellm")
    options.setdefault("judges", ("gpt-3.5",))
    kinds = {"CUS": "continuous", "RAW": "continuous", "SPE": "continuous", "win_rate": "verdict",
             "win_rate_tie_adjusted": "verdict"}
    names = {"win_rate": "win rate", "win_rate_tie_adjusted": "win rate, ties ½"}
    return TaskFixture(per_unit=per_unit, kinds=kinds, metric_names=names, **options)


def _summaries(task: TaskFixture) -> dict[str, Any]:
    summaries = {}
    for metric, kind in task.kinds.items():
        raw = [row.get(metric) for row in task.per_unit.values() if metric in row]
        values = [float(v) for v in raw if v is not None]
        summaries[metric] = summarize(values, n_unscored=len(raw) - len(values))
    return summaries


def _samples(task: TaskFixture, model: str) -> list[dict[str, Any]]:
    records = []
    for index, (unit, row) in enumerate(task.per_unit.items()):
        metric = next(iter(row))
        answer = HOSTILE_ANSWER if index == 0 else f"As {unit[:20]}, I would answer question {index} calmly."
        records.append({
            "schema": 1, "task": task.name, "sample_id": f"p{index:03d}-{metric}-q0", "unit": unit, "metric": metric,
            "prompt": [{"role": "system", "content": f"Adopt the identity of {unit}."},
                       {"role": "user", "content": f"Question {index}: what do you do on a stormy night?"}],
            "answer": answer,
            "judge_prompt": [{"role": "user", "content": f"Grade this response by {model}: {answer}"}],
            "judgments": [{"judge": task.judges[0], "reply": f"(1) Evaluation: fine. Therefore, the final score is {row[metric]}",
                           "score": row[metric], "unscored_reason": None}],
            "score": row[metric],
            "unscored_reason": None,
        })
    return records


# Fixture names map to the real task whose manifest they carry (a name no real task has borrows
# its family's first task).
_FAMILY = {"personagym": "personagym-light", "rolebench": "rolebench-en"}


@functools.lru_cache(maxsize=None)
def _real_manifest(name: str, protocol: str, judges: tuple[str, ...], seed: int, limit: int | None,
                   unscored_policy: str, options: tuple[tuple[str, str], ...]) -> str:
    """The manifest entry the real task writes for these settings (as JSON: the cache stays immutable)."""
    from rolebench_eval.task_api import JudgeSpec, RunSettings
    from rolebench_eval.task_registry import build_task, discover

    registry = discover()
    if name not in registry.tasks:
        name = _FAMILY["rolebench" if protocol == "rolellm" else "personagym"]
    settings = RunSettings(
        protocol=None if protocol == "rolellm" else protocol, limit=limit, unscored_policy=unscored_policy,
        seed=seed, judges=tuple(JudgeSpec(j) for j in judges), options=dict(options),
    )
    return json.dumps(build_task(registry.tasks[name], settings).manifest())


def task_manifest(t: TaskFixture) -> dict[str, Any]:
    """Every field the real task writes, then the fixture's own values (version, data hash, sizes)."""
    policy = t.unscored_policy if t.protocol != "rolellm" else "exclude"
    manifest = json.loads(_real_manifest(t.name, t.protocol, tuple(t.judges), t.seed, t.limit, policy,
                                         tuple(sorted(t.options.items()))))
    manifest["task"], manifest["version"], manifest["unscored_policy"] = t.name, t.version, t.unscored_policy
    data = manifest["data"]
    if "questions_sha256" in data:
        data["questions_sha256"], data["n_personas"] = t.data_hash, len(t.per_unit)
    else:
        first = next(iter(data["files_sha256"]))
        data["files_sha256"][first] = t.data_hash
    for path, value in t.manifest_overrides.items():
        *parents, leaf = path.split(".")
        node = manifest
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return manifest


def write_run(results_root: Path, run_id: str, tasks: Sequence[TaskFixture], model: str = "model-a",
              examples_model: str | None = None) -> Path:
    """Write a finished run directory results_root/runs/run_id and return its path.

    The examples model is the first judge unless `examples_model` names another (as `rbe run` does).
    """
    path = results_root / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    config_hash = hashlib.sha256(f"{run_id}|{model}".encode()).hexdigest()
    judges = sorted({j for t in tasks for j in t.judges})
    examples = examples_model or (judges[0] if judges else None)
    manifest = {
        "schema": "rolebench-eval/manifest/v1",
        "config_hash": config_hash,
        "model": {"backend": "openai", "model": model, "label": model, "identity": f"openai:{model}"},
        "judges": [{"backend": "openai", "model": j, "label": j, "identity": f"openai:{j}"} for j in judges],
        "examples_model": (
            {"backend": "openai", "model": examples, "label": examples, "identity": f"openai:{examples}"}
            if examples else None
        ),
        "settings": {"seed": tasks[0].seed if tasks else 0, "limit": tasks[0].limit if tasks else None},
        "tasks": {t.name: task_manifest(t) for t in tasks},
        "smoke_judge": False,
        "deviations": [],
    }
    results = {
        "schema": "rolebench-eval/results/v1",
        "run_id": run_id,
        "config_hash": config_hash,
        "model": {"label": model, "backend": "openai", "identity": f"openai:{model}"},
        "judges": [{"label": j, "backend": "openai", "model": j, "smoke": False} for j in judges],
        "examples_model": examples,
        "smoke_judge": False,
        "smoke_warning": None,
        "deviations": [],
        "tasks": {
            t.name: {
                "task": t.name, "version": t.version, "protocol": t.protocol,
                "roleplay_template": manifest["tasks"][t.name]["roleplay_template"]["name"],
                "unscored_policy": t.unscored_policy, "judges": list(t.judges), "metric_kinds": dict(t.kinds),
                "metrics": _summaries(t), "metric_names": dict(t.metric_names),
                "items": {"n": len(t.per_unit), "n_scored": len(t.per_unit), "n_unscored": 0, "unscored_reasons": {}},
                "per_unit": t.per_unit, "warnings": [],
            }
            for t in tasks
        },
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    (path / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    records = [r for t in tasks for r in _samples(t, model)]
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
