"""Which checkpoint an endpoint serves, asked before a run is configured.

An endpoint's identity includes what its server says about the model behind the name (see
models.openai_identity), so the run directory and its cache keys change with the checkpoint.
Asking is one metadata request per endpoint, never a model call. When an endpoint does not
answer, a finished run of the same command can still be printed from its files: the manifest
keeps a hash of the configuration as it reads without the servers' words (`name_hash`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rolebench_eval.running import run_dir as rd
from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.errors import RbeError
from rolebench_eval.models import ModelSpec, ReplicaMismatch, name_only_note, spec_identity

FRESH_NOTE = (
    "--fresh: no answer or judgment stored before this run was reused; every call was made anew "
    "(later reruns use these new calls)"
)


def identify_endpoints(
    specs: Sequence[ModelSpec | None],
    deviations: list[str],
    ask: Callable[[ModelSpec], ModelSpec | None],
) -> tuple[list[ModelSpec | None], RbeError | None]:
    """The specs with their servers' facts (`ask` is models.preflight), and the first error.

    An endpoint that says nothing identifying gets a deviation (also logged by the runner): its
    answers are reused by name (and the first URL, when it has replicas). Replicas that say
    different things are refused at once (models.ReplicaMismatch). The error is returned rather than raised: the caller decides
    whether a finished run can stand in (see finished_run_by_name).
    """
    told: dict[tuple[str | None, tuple[str, ...], str, str], ModelSpec | None] = {}
    error: RbeError | None = None
    identified: list[ModelSpec | None] = []
    for spec in specs:
        if spec is None or spec.backend != "openai":
            identified.append(spec)
            continue
        key = (spec.base_url, spec.replicas, spec.model, spec.api_key_env)
        if key not in told:
            try:
                told[key] = ask(spec)
            except ReplicaMismatch:
                raise  # a wrong command, not an endpoint that is down: no finished run stands in
            except RbeError as exc:
                error = error or exc
                told[key] = None
        answer = told[key]
        if answer is not None:
            spec = replace(spec, server_facts=answer.server_facts)
        note = name_only_note(spec)
        if note and note not in deviations:
            deviations.append(note)
        identified.append(spec)
    return identified, error


def name_only_config(
    config_core: dict[str, Any], specs: Sequence[ModelSpec], options: BackendOptions
) -> dict[str, Any]:
    """The configuration as it reads when the endpoints are not asked: identities by name, no
    server facts. Equal for every checkpoint served under the same names."""
    by_name = {spec_identity(s, options): spec_identity(replace(s, server_facts=None), options) for s in specs}
    data = copy.deepcopy(config_core)
    for entry in [data.get("model"), *(data.get("judges") or []), data.get("examples_model")]:
        if isinstance(entry, dict):
            entry.pop("served_model", None)
            entry.pop("server_fingerprint", None)
            entry["identity"] = by_name.get(entry.get("identity"), entry.get("identity"))
    return data


def finished_run_by_name(results_dir: Path, name_hash: str) -> tuple[Path, str] | None:
    """The most recently finished run with this name-only configuration: (path, config_hash)."""
    found: list[tuple[float, Path, str]] = []
    for run in rd.find_runs(results_dir):
        results = run / rd.RESULTS
        try:
            manifest = json.loads((run / rd.MANIFEST).read_text(encoding="utf-8"))
            finished = results.stat().st_mtime
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("name_hash") == name_hash:
            found.append((finished, run, str(manifest.get("config_hash"))))
    if not found:
        return None
    _, path, config_hash = max(found)
    return path, config_hash
