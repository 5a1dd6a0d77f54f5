"""The run directory: its layout, its manifest, and atomic writes of derived files.

results/runs/<model>__<tasks>__<hash>/
  manifest.json          configuration, its hash, model identities, data/prompt hashes, versions
  calls/generation.jsonl every call to the model under test (append-only; the resume point)
  calls/judging.jsonl    every call to judges and the examples model (append-only)
  samples.jsonl          per-sample records derived from the calls (schema 2): what is the sample's
                         own inline (question, answer, delivered examples segment, parsed score or
                         the reason there is none, usage), and each text of a call (prompt, score
                         examples prompt/reply/processed block, judge prompt, judge reply) as a
                         reference {"$call": key, "file": "generation"|"judging", "part":
                         "prompt"|"reply", "sha"?, "derive"?} (running/call_refs.py); read them
                         with analysis/run_samples.py::iter_samples, which puts the texts back
  results.json           the numbers (schema in the README, "The run directory")
  report.md              a short human-readable report
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rolebench_eval.errors import RunDirectoryError

LOCK_NAME = "run.lock"  # held by a running `rbe run` (run_lock.py); not part of the results

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
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write `text` (a string, or an iterable of strings written one after another as they come,
    so that a large file is never held in memory whole) to a sibling `.tmp` file, then rename it
    over `path`.

    Readers see the old file or the new one, never half of one. On any failure (a directory in
    the way, a read-only folder, a full disk) the `.tmp` file is removed, the old file is left as
    it was, and the error names `path`.
    """
    tmp = path.with_name(path.name + ".tmp")
    blocking = next((p for p in path.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise RunDirectoryError(f"cannot write {path}: {blocking} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
        with tmp.open("w", encoding="utf-8") as handle:
            if isinstance(text, str):
                handle.write(text)
            else:
                handle.writelines(text)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is unwritable: no .tmp could have been made there
        raise RunDirectoryError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON line per row, streamed (rows may be a generator)."""
    write_text_atomic(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# Top-level keys whose value must be a JSON object, per kind of file read with read_json: code
# reading these files indexes into them, so a wrong shape is refused here with the file's name.
_OBJECT_FIELDS = {"run results": ("tasks",), "baseline file": ("results",), "run manifest": ()}


def read_json(path: Path, what: str) -> Any:
    """Read a JSON object from `path`; a missing, unreadable, non-UTF-8 or wrongly shaped file is
    a RunDirectoryError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RunDirectoryError(f"{what}: {path} is missing") from exc
    except UnicodeDecodeError as exc:
        raise RunDirectoryError(f"corrupted file: {path} is not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"corrupted file: {path} is not valid JSON ({exc})") from exc
    except OSError as exc:
        raise RunDirectoryError(f"{what}: cannot read {path}: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise RunDirectoryError(f"corrupted file: {path} ({what}) holds a JSON {type(data).__name__}, expected an object")
    if what == "baseline file" and data.get("schema") != "rolebench-eval/baseline/v1":
        return data  # not a baseline file at all: the loader says so, with the schema it found
    for key in _OBJECT_FIELDS.get(what, ()):
        if not isinstance(data.get(key), dict):
            raise RunDirectoryError(f"corrupted file: {path} ({what}): field {key!r} is missing or not an object")
    if what == "run results" and not all(isinstance(task, dict) for task in data["tasks"].values()):
        raise RunDirectoryError(f"corrupted file: {path} ({what}): every entry of 'tasks' must be an object")
    if what == "baseline file" and not isinstance(data["results"].get("tasks"), dict):
        raise RunDirectoryError(f"corrupted file: {path} ({what}): field 'results.tasks' is missing or not an object")
    return data


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
    if path.exists() and any(p.name != LOCK_NAME for p in path.iterdir()):
        raise RunDirectoryError(
            f"corrupted run directory: {path} has files but no {MANIFEST}; delete it to start over"
        )
    write_json_atomic(manifest_path, manifest)


def find_runs(results_root: Path) -> list[Path]:
    runs = results_root / RUNS_FOLDER
    return sorted(p for p in runs.glob("*") if (p / MANIFEST).is_file()) if runs.is_dir() else []
