"""Reading calls back by key, for the references of samples.jsonl (call_refs.py); read-only.

The calls files are scanned once for the position of each line and its key (the key is read from
the line's start, which call_store.py writes first, without parsing the rest); a referenced line is
then read and parsed on demand, and the most recent lines are kept parsed (the samples of a batch
refer to the same calls one after another). Memory grows with the number of calls (a key and two
integers each), never with their texts.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running.call_refs import CALL_FILES, DERIVATIONS, text_sha

_KEY_FIELD = b'"key":'
_CACHED_LINES = 256


class CallIndex:
    """The lines of one run directory's calls files, by call key."""

    def __init__(self, run_path: Path):
        self.run_path = Path(run_path)
        self._positions: dict[str, dict[str, list[tuple[int, int]]]] = {}
        self._parsed: OrderedDict[tuple[str, int], tuple[dict[str, Any], str | None]] = OrderedDict()
        self._handles: dict[str, Any] = {}

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def _lines_of(self, file: str) -> dict[str, list[tuple[int, int]]]:
        found = self._positions.get(file)
        if found is None:
            found = self._positions[file] = self._scan(file)
        return found

    def _path(self, file: str) -> Path:
        name = CALL_FILES.get(file)
        if name is None:
            raise RunDirectoryError(f"{self.run_path / 'samples.jsonl'}: a reference names calls file {file!r}, not one of {sorted(CALL_FILES)}")
        return self.run_path / name

    def _scan(self, file: str) -> dict[str, list[tuple[int, int]]]:
        path = self._path(file)
        positions: dict[str, list[tuple[int, int]]] = {}
        if not path.exists():
            return positions
        offset = 0
        with path.open("rb") as handle:
            for line in handle:
                key = _key_of(line)
                if key is not None:
                    positions.setdefault(key, []).append((offset, len(line)))
                offset += len(line)
        return positions

    def _entry(self, file: str, offset: int, length: int) -> tuple[dict[str, Any], str | None]:
        cached = self._parsed.get((file, offset))
        if cached is not None:
            self._parsed.move_to_end((file, offset))
            return cached
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = self._path(file).open("rb")
        handle.seek(offset)
        entry = json.loads(handle.read(length))
        text = (entry.get("completion") or {}).get("text")
        cached = (entry, text_sha(text) if isinstance(text, str) else None)
        self._parsed[(file, offset)] = cached
        if len(self._parsed) > _CACHED_LINES:
            self._parsed.popitem(last=False)
        return cached

    def resolve(self, ref: dict[str, Any]) -> Any:
        """The value a reference stands for; RunDirectoryError (one line) when it is not there."""
        key, file, part = ref.get("$call"), ref.get("file"), ref.get("part")
        if not isinstance(key, str) or part not in ("prompt", "reply"):
            raise RunDirectoryError(f"malformed reference {json.dumps(ref)[:200]}")
        candidates = self._lines_of(file).get(key)
        where = f"call {key[:16]}... in {CALL_FILES[file]}"
        if not candidates:
            raise RunDirectoryError(f"{where} is missing (the calls files were changed since the samples were written)")
        if part == "prompt":
            entry, _ = self._entry(file, *candidates[-1])
            return entry["request"]["messages"]
        sha = ref.get("sha")
        for offset, length in reversed(candidates):  # the latest line of the key first
            entry, found = self._entry(file, offset, length)
            if found == sha:
                text = entry["completion"]["text"]
                derive = ref.get("derive")
                if derive is None:
                    return text
                if derive not in DERIVATIONS:
                    raise RunDirectoryError(f"{where}: unknown derivation {derive!r} (written by a newer rbe?)")
                return DERIVATIONS[derive](text)
        raise RunDirectoryError(f"{where} holds no reply with hash {sha} (the calls files were changed since the samples were written)")


def _key_of(line: bytes) -> str | None:
    """The call key of a calls-file line: read at its start, or by parsing it when it is not
    where call_store.py puts it; None for a blank or broken line (the store reports those)."""
    start = line.find(_KEY_FIELD, 0, 80)
    if start >= 0:
        start += len(_KEY_FIELD)
        while line[start : start + 1] == b" ":
            start += 1
        end = line.find(b'"', start + 1)
        if line[start : start + 1] == b'"' and end > 0:
            return line[start + 1 : end].decode("ascii", "replace")
    if not line.strip():
        return None
    try:
        key = json.loads(line).get("key")
    except (ValueError, AttributeError):
        return None
    return key if isinstance(key, str) else None
