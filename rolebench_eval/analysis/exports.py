"""`rbe export RUN --format csv|parquet|jsonl`: a run's samples and metrics as files for
spreadsheets and dashboards.

Two files per run, in the shapes of the Python API (`analysis/frames.py`): `samples.<ext>` (one
row per sample) and `metrics.<ext>` (one row per task x metric [x judge]). Missing values are
empty cells (CSV) or nulls (JSONL, Parquet), never 0. Parquet needs pyarrow; without it the
export stops with a one-line error naming the package, before any file is written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from rolebench_eval.errors import RunDirectoryError, UsageError
from rolebench_eval.running import run_dir as rd

FORMATS = ("csv", "parquet", "jsonl")
EXPORTS_FOLDER = "exports"


def check_format(fmt: str) -> None:
    """Refuse an unknown format, or parquet without pyarrow (a one-line error naming it)."""
    if fmt not in FORMATS:
        raise UsageError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UsageError("--format parquet needs the pyarrow package, which is not installed: pip install pyarrow "
                         "(or use --format csv or jsonl)")


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(tmp, engine="pyarrow", index=False)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunDirectoryError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    """Write one DataFrame atomically in `fmt` (csv: UTF-8 with a header, no index; jsonl: one
    JSON object per row, NaN as null)."""
    check_format(fmt)
    if fmt == "parquet":
        _write_parquet(frame, path)
    elif fmt == "csv":
        rd.write_text_atomic(path, frame.to_csv(index=False))
    else:
        rd.write_text_atomic(path, "".join(json.dumps(_json_row(row), ensure_ascii=False) + "\n"
                                           for row in frame.to_dict(orient="records")))
    return path


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    # json.dumps writes every float exactly (pandas' to_json keeps 10 digits) and NaN as null.
    def cell(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        return value.item() if hasattr(value, "item") else value  # numpy scalars

    return {str(key): cell(value) for key, value in row.items()}


def read_frame(path: Path, fmt: str) -> pd.DataFrame:
    """Read back a file written by `write_frame` (for tests and notebooks)."""
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "csv":
        return pd.read_csv(path)
    return pd.read_json(path, orient="records", lines=True, precise_float=True)


def export_frames(frames: dict[str, pd.DataFrame], output_dir: Path, fmt: str) -> list[Path]:
    """Write each frame as `<output_dir>/<name>.<fmt>`; returns the paths in order."""
    check_format(fmt)
    return [write_frame(frame, Path(output_dir) / f"{name}.{fmt}", fmt) for name, frame in frames.items()]


def default_output(results_dir: Path, run_id: str) -> Path:
    """`<results-dir>/exports/<run id>/`: next to the runs, never inside a run directory."""
    return Path(results_dir) / EXPORTS_FOLDER / run_id
