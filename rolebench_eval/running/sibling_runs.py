"""Other runs' calls as fallbacks: re-judging or re-aggregating never repeats a model call.

A run with another judge, protocol or policy asks the same model under test the same requests;
their answers are read from the calls files of sibling runs that used the same model identity
(and likewise for judgments), copied into this run's store on a miss, and named in its manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rolebench_eval.running import run_dir as rd
from rolebench_eval.running.call_store import CallStore


def sibling_calls(root: Path, run_path: Path, identities: set[str], calls_file: str) -> list[Path]:
    """The same calls file of other runs that used one of these model identities."""
    found = []
    for other in rd.find_runs(root):
        if other == run_path or not (other / calls_file).exists():
            continue
        try:
            manifest = json.loads((other / rd.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict):
            continue
        used = {(manifest.get("model") or {}).get("identity")} if calls_file == rd.GENERATION_CALLS else {
            j.get("identity") for j in [*manifest.get("judges", []), manifest.get("examples_model") or {},
                                        manifest.get("user_model") or {}, manifest.get("baseline_model") or {}]
            if isinstance(j, dict)
        }
        if used & identities:
            found.append(other / calls_file)
    return found


def record_reuse(run_path: Path, generation: CallStore, judging: CallStore, log: Callable[[str], None]) -> None:
    """Name the sibling runs whose calls were reused, in the terminal and the manifest."""
    if not (generation.reused_from or judging.reused_from):
        return
    for name, store in [("answers_reused_from", generation), ("judgments_reused_from", judging)]:
        if store.reused_from:
            log(f"{name.replace('_', ' ')}: {', '.join(sorted(store.reused_from))}")
    manifest_path = run_path / rd.MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name, store in [("answers_reused_from", generation), ("judgments_reused_from", judging)]:
        if store.reused_from:
            manifest[name] = sorted(set(manifest.get(name, [])) | store.reused_from)
    rd.write_json_atomic(manifest_path, manifest)
