"""Persona files: the user's own characters, read with the line number of every entry.

Formats (by the file's suffix): `.txt` one persona per line; `.json` a list of strings or of objects
with `name` and `description`; `.jsonl` one string or object per line; `.csv` a header row and a
named column (`--column`, default `persona` or `description`, with an optional `name` column).

A persona's text (its description) is what the prompts say as `{persona}`, exactly as written. Its
id names its questions file (`<id>.json`, the benchmark's layout): the name, or the text when there
is no name, when that is safe as a file name; otherwise a stable id made from it (a slug and a hash
of the original), so the same file always gives the same ids. Empty entries, duplicates (same text
up to case and spacing, or the same name) and ids that would collide are refused with their lines.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rolebench_eval.errors import UsageError

FORMATS = ("txt", "json", "jsonl", "csv")
# The benchmark's own persona strings are file names (letters, digits, spaces, "-,+'"); this
# keeps that, and refuses path separators, control characters, leading dots and long names.
_SAFE = re.compile(r"[^\W_][\w .,'+&()-]*")
_MAX_ID_BYTES = 200  # file systems allow 255 bytes; leaves room for ".json" and temporary names
# Files of a question set's folder besides the personas', and names Windows reserves.
RESERVED_IDS = frozenset({"question-set", "con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                          *(f"lpt{i}" for i in range(1, 10))})
_DEFAULT_COLUMNS = ("persona", "description")


@dataclass(frozen=True)
class Persona:
    id: str  # the stem of its questions file
    text: str  # the description: `{persona}` in every prompt
    name: str | None  # as given (JSON/JSONL objects, CSV name column), else None
    line: int  # where it is in the persona file


@dataclass(frozen=True)
class PersonaFile:
    path: Path
    format: str
    sha256: str  # of the file's bytes: part of a question set's inputs
    column: str | None  # CSV: the description column used
    personas: tuple[Persona, ...]


def safe_id(name: str) -> str:
    """`name` itself when it is safe as a file name, else `<slug>-<10 hex of its sha256>`."""
    if (_SAFE.fullmatch(name) and not name.endswith((" ", "."))
            and len(name.encode("utf-8")) <= _MAX_ID_BYTES and name.casefold() not in RESERVED_IDS):
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")[:48].strip("-")
    return f"{slug or 'persona'}-{digest}"


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _json_entries(text: str, where: str) -> list[tuple[int, Any]]:
    """The elements of a top-level JSON list with the line each starts on."""
    decoder = json.JSONDecoder()
    index = len(text) - len(text.lstrip())
    if not text[index:index + 1] == "[":
        raise UsageError(f"{where}: expected a JSON list of personas (strings or objects with name and description)")
    index += 1
    entries: list[tuple[int, Any]] = []
    while True:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if text[index:index + 1] == "]" and not entries:
            index += 1
            break
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
        entries.append((_line_of(text, index), value))
        index = end
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if text[index:index + 1] == ",":
            index += 1
            continue
        if text[index:index + 1] == "]":
            index += 1
            break
        raise UsageError(f"{where}, line {_line_of(text, index)}: invalid JSON: expected ',' or ']'")
    if text[index:].strip():
        raise UsageError(f"{where}, line {_line_of(text, index)}: invalid JSON: extra data after the list")
    return entries


def _entry(value: Any, where: str, line: int) -> tuple[str | None, str]:
    """(name, text) of one JSON/JSONL entry."""
    if isinstance(value, str):
        return None, value
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"name", "description"})
        if unknown or "description" not in value:
            raise UsageError(
                f"{where}, line {line}: a persona object needs 'description' (and may have 'name'); "
                f"got fields {sorted(value)}"
            )
        name, description = value.get("name"), value["description"]
        if not isinstance(description, str) or (name is not None and not isinstance(name, str)):
            raise UsageError(f"{where}, line {line}: 'name' and 'description' must be strings")
        return name, description
    raise UsageError(f"{where}, line {line}: expected a string or an object with name and description, "
                     f"got {type(value).__name__}")


def _csv_entries(text: str, where: str, column: str | None) -> tuple[str, list[tuple[int, str | None, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    if column is None:
        column = next((c for c in _DEFAULT_COLUMNS if c in header), None)
        if column is None:
            raise UsageError(f"{where}, line 1: no 'persona' or 'description' column; name one with --column "
                             f"(columns: {', '.join(header) or 'none'})")
    elif column not in header:
        raise UsageError(f"--column {column}: {where} has no such column (columns: {', '.join(header) or 'none'})")
    names = "name" if "name" in header and column != "name" else None
    rows = []
    start = 2  # the line a row starts on: the header is line 1; quoted cells may span lines
    for row in reader:
        if None in row:
            raise UsageError(f"{where}, line {start}: more cells than the header has columns")
        name = (row.get(names) or None) if names else None
        rows.append((start, name, row.get(column) or ""))
        start = reader.line_num + 1
    return column, rows


def load_personas(path: Path, column: str | None = None) -> PersonaFile:
    """Read and check a persona file; every problem is a one-line UsageError naming file and line."""
    where = str(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UsageError(f"--personas {where}: unknown format {path.suffix or '(no suffix)'!r}; use .txt "
                         "(one per line), .json, .jsonl or .csv")
    if column is not None and suffix != "csv":
        raise UsageError(f"--column applies to .csv persona files, not {where}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--personas {where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"{where}, line {line}: not UTF-8 text") from None
    entries: list[tuple[int, str | None, str]] = []
    if suffix == "txt":
        lines = text.split("\n")
        while lines and not lines[-1].strip():
            lines.pop()  # trailing blank lines end the file; blank lines inside it are empty entries
        entries = [(number, None, line.rstrip("\r")) for number, line in enumerate(lines, start=1)]
    elif suffix == "jsonl":
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}, line {number}: invalid JSON: {exc.msg}") from None
            entries.append((number, *_entry(value, where, number)))
    elif suffix == "json":
        entries = [(line, *_entry(value, where, line)) for line, value in _json_entries(text, where)]
    else:
        column, entries = _csv_entries(text, where, column)
    return PersonaFile(path, suffix, hashlib.sha256(data).hexdigest(), column, _checked(entries, where))


def _checked(entries: list[tuple[int, str | None, str]], where: str) -> tuple[Persona, ...]:
    empty = [line for line, _, text in entries if not text.strip()]
    empty += [line for line, name, _ in entries if name is not None and not name.strip()]
    if empty:
        lines = ", ".join(str(n) for n in sorted(set(empty)))
        raise UsageError(f"{where}: empty persona at line(s) {lines}")
    if not entries:
        raise UsageError(f"{where}: no personas")
    problems: list[str] = []
    seen_text: dict[str, int] = {}
    seen_id: dict[str, int] = {}
    personas = []
    for line, name, text in entries:
        text = text.strip()
        key = _normal(text)
        if key in seen_text:
            problems.append(f"line {line} repeats the persona of line {seen_text[key]}")
            continue
        seen_text[key] = line
        name = name.strip() if name is not None else None
        persona_id = safe_id(name if name is not None else text)
        # Case-insensitive file systems would merge ids that differ only in case.
        if persona_id.casefold() in seen_id:
            what = "name" if name is not None else "file name"
            problems.append(f"line {line} has the same {what} as line {seen_id[persona_id.casefold()]} ({persona_id!r})")
            continue
        seen_id[persona_id.casefold()] = line
        personas.append(Persona(persona_id, text, name, line))
    if problems:
        raise UsageError(f"{where}: duplicate personas: {'; '.join(problems)}")
    return tuple(personas)
