"""Where each stored answer's line is, in a few bytes per call (issue 13).

A dict of 64-char hex keys to (offset, length) tuples costs ~250 B per call in ~5 small objects,
and being long-lived small objects interleaved with a run's transient ones they also pin the
allocator's pools, so at 22,000 calls the process grew by ~2x the dict's own 5.5 MiB. Here an
entry is 20 bytes in three sorted numpy arrays (the key's first 64 bits, offset, length), plus a
small dict of the most recent entries that is merged into the arrays when it fills, so a set stays
a dict insert and the arrays are rebuilt once per `BUFFER` sets, not per set.

The arrays keep only 64 bits of a key, so two keys can share a prefix: `candidates` returns every
position stored under the key's prefix, newest first, and the caller (CallStore) keeps the one
whose line holds the full key. For sha256 keys a shared prefix is a ~n^2/2^65 event (1e-11 at
22,000 calls), but it must never lose an entry or hand back another call's answer, so it is
handled, not assumed away.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from typing import Any

Position = tuple[int, int]  # (byte offset of the line, its length in bytes)

_MASK = (1 << 64) - 1


def key_prefix(key: str) -> int:
    """The 64 bits of `key` the arrays are sorted by: its first 16 hex digits.

    A key that is not hex (tests and other layouts use short names) is hashed instead; any
    deterministic value is correct, since a shared prefix only adds a candidate to check."""
    try:
        # `& _MASK`: int() also accepts a sign ("-1f"), which would be negative.
        return int(key[:16], 16) & _MASK
    except ValueError:
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class AnswerIndex:
    """key -> newest (offset, length), for many keys in contiguous memory."""

    # Recent entries kept in a dict: ~0.5 MiB at most whatever the run's size, and a merge (an
    # O(n) copy of the arrays) every 2048 sets: a set costs ~1.3 us even at a million calls.
    BUFFER = 2048

    def __init__(self, buffer: int | None = None) -> None:
        self._buffer_size = buffer or self.BUFFER
        self._recent: dict[str, Position] = {}
        # Sorted by prefix; among equal prefixes older entries first (merges insert to the right).
        # Empty stdlib arrays until the first merge makes them numpy arrays: a store of fewer
        # calls than BUFFER (a small run, `rbe ls`) does not import numpy.
        self._prefixes: Any = array("Q")
        self._offsets: Any = array("Q")
        self._lengths: Any = array("I")  # a line is < 4 GiB
        self._views()
        self._distinct = 0

    def _views(self) -> None:
        # Lookups go through memoryviews: bisect on one and its items are plain Python ints, half
        # the cost of np.searchsorted and numpy scalars for one key (it is every call's cost).
        self._prefix_view = memoryview(self._prefixes)
        self._offset_view = memoryview(self._offsets)
        self._length_view = memoryview(self._lengths)

    def __len__(self) -> int:
        """Distinct keys (a key set again with `replaces` counts once)."""
        return self._distinct

    def candidates(self, key: str) -> list[Position]:
        """Every position that may be `key`'s, newest first; [] when it has none (the common
        case on a fresh run: one dict lookup and one binary search)."""
        found: list[Position] = []
        recent = self._recent.get(key)
        if recent is not None:
            found.append(recent)  # the dict holds the full key: certainly this key's newest line
        prefixes = self._prefix_view
        end = len(prefixes)
        if not end:
            return found
        prefix = key_prefix(key)
        start = bisect_left(prefixes, prefix)
        if start == end or prefixes[start] != prefix:
            return found
        offsets, lengths = self._offset_view, self._length_view
        stop = start + 1
        while stop < end and prefixes[stop] == prefix:  # a shared prefix: rare, so a short scan
            stop += 1
        for i in range(stop - 1, start - 1, -1):  # newest first
            found.append((offsets[i], lengths[i]))
        return found

    def set(self, key: str, position: Position, replaces: Position | None = None) -> None:
        """Record `key`'s newest line. `replaces`: the position the caller found holding this
        same key (checked against the line's full key), overwritten so the arrays keep one entry
        per key and `len` stays exact. Without it a key already in the arrays is stored twice,
        which `candidates` still orders newest first."""
        offset, length = position
        if offset < 0 or not 0 <= length <= 0xFFFFFFFF:
            raise ValueError(f"position {position!r} out of range")
        if key in self._recent:
            self._recent[key] = position
            return
        if replaces is not None and self._overwrite(key, replaces, position):
            return
        self._recent[key] = position
        self._distinct += 1
        if len(self._recent) >= self._buffer_size:
            self._merge()

    def _overwrite(self, key: str, old: Position, new: Position) -> bool:
        prefixes, prefix = self._prefix_view, key_prefix(key)
        at = bisect_left(prefixes, prefix)
        while at < len(prefixes) and prefixes[at] == prefix:
            if (self._offset_view[at], self._length_view[at]) == old:
                self._offset_view[at], self._length_view[at] = new  # writes through to the arrays
                return True
            at += 1
        return False

    def _merge(self) -> None:
        """Move the recent entries into the arrays: O(n) copies once per BUFFER sets."""
        import numpy as np

        count = len(self._recent)
        prefixes = np.fromiter((key_prefix(k) for k in self._recent), dtype=np.uint64, count=count)
        offsets = np.fromiter((p[0] for p in self._recent.values()), dtype=np.uint64, count=count)
        lengths = np.fromiter((p[1] for p in self._recent.values()), dtype=np.uint32, count=count)
        order = np.argsort(prefixes, kind="stable")
        prefixes, offsets, lengths = prefixes[order], offsets[order], lengths[order]
        # side="right": a new entry goes after every older one of its prefix (newest last);
        # np.insert keeps entries given for one index in their given (stable-sorted) order.
        at = np.searchsorted(np.asarray(self._prefixes, dtype=np.uint64), prefixes, "right")
        self._release_views()
        self._prefixes = np.insert(self._prefixes, at, prefixes)
        self._offsets = np.insert(self._offsets, at, offsets)
        self._lengths = np.insert(self._lengths, at, lengths)
        self._views()
        self._recent = {}

    def _release_views(self) -> None:
        for view in (self._prefix_view, self._offset_view, self._length_view):
            view.release()

    def nbytes(self) -> int:
        """The arrays' size (the bench reports it next to tracemalloc's figure)."""
        return sum(memoryview(a).nbytes for a in (self._prefixes, self._offsets, self._lengths))
