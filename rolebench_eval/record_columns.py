"""Records kept in columns: what a task's results read of each sample, held for the whole run.

A task that streams its records (task_api.RecordStream) still keeps, per sample, the few fields its
results and reliability figures read, until the last job ends. As one dict per record (and one per
judgment) that is ~700 bytes of small objects per sample, allocated among the run's transient prompts,
which pins the allocator's pools: the process grew by ~2.4 KB per sample (issue 13). Here each field is
one column (a list): per sample a pointer per field, and the values are the records' own objects (a
unit, a metric or a reason string is shared, not copied). Reading a record builds its dict on the
fly, equal to the dict that was added, so code written for dict records reads these unchanged.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

_ABSENT = object()  # a field the record did not have (its dict is rebuilt without it)
_NESTED = object()  # a nested field's dict is here: its keys are in that field's own columns


class ColumnRecords(Sequence[dict[str, Any]]):
    """Records with the same top-level `fields`; `nested` fields hold a dict (or None) of the
    named keys, `listed` fields a list of dicts of the named keys. A record may lack any field;
    nested and listed fields keep only the keys named (the rest is not read: it is not kept)."""

    def __init__(self, fields: Sequence[str], nested: Mapping[str, Sequence[str]] | None = None,
                 listed: Mapping[str, Sequence[str]] | None = None):
        self._spec = (tuple(fields), {n: tuple(k) for n, k in (nested or {}).items()},
                      {n: tuple(k) for n, k in (listed or {}).items()})
        fields, nested, listed = self._spec
        # Per top-level field: its name, its column and, for a nested field, a column per key
        # (the field's own column then holds _NESTED where the record had a dict).
        self._top = [(name, [], [(key, []) for key in nested[name]] if name in nested else None)
                     for name in fields if name not in listed]
        # Per listed field: its name, whether each record had it, where each record's items
        # start (plus the end; machine integers, not an int object per record), a column per key.
        self._listed = [(name, [], array("Q", [0]), [(key, []) for key in keys]) for name, keys in listed.items()]
        self._length = 0

    def append(self, record: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
        """Add `record`, with `extra`'s fields in place of (or besides) its own."""
        get = record.get
        for name, column, nested in self._top:
            value = extra[name] if extra is not None and name in extra else get(name, _ABSENT)
            if nested is not None:
                if isinstance(value, Mapping):
                    for key, sub in nested:
                        sub.append(value.get(key, _ABSENT))
                    value = _NESTED
                else:
                    for _, sub in nested:
                        sub.append(_ABSENT)
            column.append(value)
        for name, present, starts, columns in self._listed:
            items = get(name, _ABSENT)
            present.append(items is not _ABSENT)
            count = 0
            if items is not _ABSENT:
                for item in items:
                    for key, column in columns:
                        column.append(item.get(key, _ABSENT))
                    count += 1
            starts.append(starts[-1] + count)
        self._length += 1

    def extend(self, records: Iterator[Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> None:
        for record in records:
            self.append(record)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("record index out of range")
        return self._record(index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._record(i) for i in range(self._length))

    def reordered(self, order: Sequence[int]) -> ColumnRecords:
        """The same records in `order` (positions of this one's records, each once): the
        columns are permuted, no record is rebuilt."""
        out = ColumnRecords(*self._spec)
        for (_, column, nested), (_, new, new_nested) in zip(self._top, out._top):
            new.extend([column[i] for i in order])
            for (_, sub), (_, new_sub) in zip(nested or (), new_nested or ()):
                new_sub.extend([sub[i] for i in order])
        for (_, present, starts, columns), (_, new_present, new_starts, new_columns) in zip(self._listed, out._listed):
            new_present.extend([present[i] for i in order])
            items = [k for i in order for k in range(starts[i], starts[i + 1])]
            for (_, column), (_, new) in zip(columns, new_columns):
                new.extend([column[k] for k in items])
            end = 0
            for i in order:
                end += starts[i + 1] - starts[i]
                new_starts.append(end)
        out._length = len(order)
        return out

    def sorted_by(self, keys: Sequence[int]) -> ColumnRecords:
        """The same records ordered by `keys` (one per record, e.g. its job's index); records
        with equal keys keep their order."""
        return self.reordered(sorted(range(self._length), key=keys.__getitem__))

    def _record(self, index: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for name, column, nested in self._top:
            value = column[index]
            if value is _ABSENT:
                continue
            if value is _NESTED:
                value = {key: sub[index] for key, sub in nested if sub[index] is not _ABSENT}  # type: ignore[union-attr]
            record[name] = value
        for name, present, starts, columns in self._listed:
            if present[index]:
                record[name] = [{key: column[k] for key, column in columns if column[k] is not _ABSENT}
                                for k in range(starts[index], starts[index + 1])]
        return record
