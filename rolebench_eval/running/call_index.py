"""Reading calls back by key, for the references of samples.jsonl (call_refs.py); read-only.

The calls files are scanned for the position of each line and its key (the key is read from the
line's start, which call_store.py writes first, without parsing the rest), as far as the references
read so far needed; a referenced line is then read and parsed on demand, and the most recent lines
are kept parsed (the samples of a batch refer to the same calls one after another). Memory grows with the number of calls (a key and two
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


class _Scan:
    """The positions of one calls file's lines by key, read as far as a caller has needed."""

    def __init__(self, path: Path):
        self.positions: dict[str, list[tuple[int, int]]] = {}
        self._handle: Any = path.open("rb") if path.exists() else None
        self._offset = 0

    def more(self, lines: int = 1024) -> bool:
        """Index up to `lines` more lines; False once the whole file is indexed."""
        handle = self._handle
        if handle is None:
            return False
        for _ in range(lines):
            line = handle.readline()
            if not line:
                self.close()
                return False
            key = _key_of(line)
            if key is not None:
                self.positions.setdefault(key, []).append((self._offset, len(line)))
            self._offset += len(line)
        return True

    def rest(self) -> None:
        while self.more():
            pass

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class CallIndex:
    """The lines of one run directory's calls files, by call key.

    A file is indexed only as far as the references read so far needed (a report's first samples
    refer to calls near the start of the files), and whole when a key is not found or none of its
    lines so far holds the reply a reference names."""

    def __init__(self, run_path: Path):
        self.run_path = Path(run_path)
        self._scans: dict[str, _Scan] = {}
        self._parsed: OrderedDict[tuple[str, int], tuple[dict[str, Any], str | None]] = OrderedDict()
        self._handles: dict[str, Any] = {}

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        for scan in self._scans.values():
            scan.close()

    def _scan_of(self, file: str) -> _Scan:
        found = self._scans.get(file)
        if found is None:
            found = self._scans[file] = _Scan(self._path(file))
        return found

    def _candidates(self, file: str, key: str) -> list[tuple[int, int]]:
        scan = self._scan_of(file)
        while key not in scan.positions and scan.more():
            pass
        return scan.positions.get(key) or []

    def _path(self, file: str) -> Path:
        name = CALL_FILES.get(file)
        if name is None:
            raise RunDirectoryError(f"{self.run_path / 'samples.jsonl'}: a reference names calls file {file!r}, not one of {sorted(CALL_FILES)}")
        return self.run_path / name

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
        candidates = self._candidates(file, key)
        where = f"call {key[:16]}... in {CALL_FILES[file]}"
        if not candidates:
            raise RunDirectoryError(f"{where} is missing (the calls files were changed since the samples were written)")
        if part == "prompt":  # every line of a key holds the same request (the key is its hash)
            entry, _ = self._entry(file, *candidates[-1])
            return entry["request"]["messages"]
        sha = ref.get("sha")
        for whole in (False, True):
            if whole:  # not among the lines indexed so far: a later line of the key may hold it
                seen = len(candidates)
                self._scan_of(file).rest()
                candidates = candidates[seen:]
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
