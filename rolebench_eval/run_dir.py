"""The run directory: its layout, its manifest, and atomic writes of derived files.

results/runs/<model>__<tasks>__<hash>/
  manifest.json          configuration, its hash, model identities, data/prompt hashes, versions
  calls/generation.jsonl every call to the model under test (append-only; the resume point)
  calls/judging.jsonl    every call to judges and the examples model (append-only)
  samples.jsonl          per-sample records derived from the calls (prompt, answer, judge prompt,
                         judge reply, parsed score or the reason there is none)
  results.json           the numbers (schema in the README, "The run directory")
  report.md              a short human-readable report
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from rolebench_eval.errors import RunDirectoryError

RUNS_FOLDER = "runs"
MANIFEST = "manifest.json"
RESULTS = "results.json"
SAMPLES = "samples.jsonl"
REPORT = "report.md"
GENERATION_CALLS = "calls/generation.jsonl"
JUDGING_CALLS = "calls/judging.jsonl"
DERIVED_STAMP = "calls/derived-stamp.json"  # inputs of the derived files, for fast unchanged reruns


def slug(text: str, limit: int = 40) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned[:limit] or "x"


def run_dir_name(model_label: str, task_names: list[str], config_hash: str) -> str:
    return f"{slug(model_label)}__{slug('+'.join(task_names), 60)}__{config_hash[:10]}"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RunDirectoryError(f"{what}: {path} is missing") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirectoryError(f"corrupted run directory: {path} is not valid JSON ({exc})") from exc


def open_run_dir(path: Path, manifest: dict[str, Any]) -> None:
    """Create the run directory with its manifest, or check that an existing one matches."""
    manifest_path = path / MANIFEST
    if manifest_path.exists():
        existing = read_json(manifest_path, "run manifest")
        if not isinstance(existing, dict) or existing.get("config_hash") != manifest["config_hash"]:
            raise RunDirectoryError(
                f"corrupted run directory: {manifest_path} does not belong to this configuration "
                f"(config_hash {existing.get('config_hash') if isinstance(existing, dict) else '?'} "
                f"!= {manifest['config_hash']}); move it away or delete it"
            )
        return
    if path.exists() and any(path.iterdir()):
        raise RunDirectoryError(
            f"corrupted run directory: {path} has files but no {MANIFEST}; delete it to start over"
        )
    write_json_atomic(manifest_path, manifest)


def find_runs(results_root: Path) -> list[Path]:
    runs = results_root / RUNS_FOLDER
    return sorted(p for p in runs.glob("*") if (p / MANIFEST).is_file()) if runs.is_dir() else []
