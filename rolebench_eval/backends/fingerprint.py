"""Cheap, stable identities for model files: a result must change when the weights change."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Full hashes of multi-GB checkpoints would take minutes; the head and tail of each weight file
# plus its size change whenever the weights do in practice, and small files are hashed whole.
_SAMPLE = 4 << 20
_SMALL = 16 << 20


def text_sha256(text: str) -> str:
    """sha256 of a text (chat templates, prompts) as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        if size <= _SMALL:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_SAMPLE))
            handle.seek(size - _SAMPLE)
            digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()


def model_fingerprint(path: Path) -> str:
    """sha256 over a model file, or over every file of a model folder (names and contents)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        name = file.name if path.is_file() else str(file.relative_to(path))
        if name.startswith(".") or "/." in name:
            continue
        digest.update(name.encode())
        digest.update(_file_digest(file).encode())
    return digest.hexdigest()
