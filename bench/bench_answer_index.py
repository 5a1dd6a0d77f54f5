"""The call store's index (issue 13): AnswerIndex against the dict it replaced, side by side.

For each size, the same sha256 hex keys go into (a) `dict[str, tuple[int, int]]` (CallStore before
issue 13) and (b) `AnswerIndex`, and the script reports per operation: set (a new key), get of a
missing key (what a fresh run asks before every call) and get of a stored key, as the median of
`--repeats` alternating rounds, with their ratio; and the memory each holds once built, measured by
tracemalloc around building it from keys made on the fly (so the caller's key list is not counted).
Only the index is timed here, not the line read and key check CallStore adds on a hit.

    .venv/bin/python bench/bench_answer_index.py [--sizes 5500,22000,100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rolebench_eval.running.answer_index import AnswerIndex  # noqa: E402


def keys(start: int, count: int) -> Iterator[str]:
    return (hashlib.sha256(f"request {n}".encode()).hexdigest() for n in range(start, start + count))


def fill_dict(items: Iterator[str]) -> dict[str, tuple[int, int]]:
    table: dict[str, tuple[int, int]] = {}
    for n, key in enumerate(items):
        table[key] = (n * 3000, 2900 + n % 100)  # offsets of ~3 KB judging lines
    return table


def fill_index(items: Iterator[str]) -> AnswerIndex:
    index = AnswerIndex()
    for n, key in enumerate(items):
        index.set(key, (n * 3000, 2900 + n % 100))
    return index


def held_bytes(build: Callable[[Iterator[str]], object], size: int) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = build(keys(0, size))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held, built


def per_op_us(run: Callable[[], object], ops: int) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / ops * 1e6


def measure(size: int, repeats: int) -> dict[str, float]:
    stored, missing = list(keys(0, size)), list(keys(10**9, size))
    names = [f"{kind} {op}" for op in ("set", "miss", "hit") for kind in ("dict", "index")]
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(repeats):
        for kind in (("dict", "index") if round_number % 2 == 0 else ("index", "dict")):
            fill = fill_dict if kind == "dict" else fill_index
            times[f"{kind} set"].append(per_op_us(lambda: fill(iter(stored)), size))
            table = fill(iter(stored))
            get = table.get if isinstance(table, dict) else table.candidates
            times[f"{kind} miss"].append(per_op_us(lambda: [get(k) for k in missing], size))
            times[f"{kind} hit"].append(per_op_us(lambda: [get(k) for k in stored], size))
    row = {name: statistics.median(values) for name, values in times.items()}
    row["dict bytes"], _ = held_bytes(fill_dict, size)
    row["index bytes"], index = held_bytes(fill_index, size)
    row["index arrays"] = index.nbytes()  # type: ignore[attr-defined]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5500,22000,100000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| calls | set: dict / index (us) | miss: dict / index (us) | hit: dict / index (us) "
          "| held: dict / index (MiB) | bytes per call: dict / index |")
    print("|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args.repeats)
        cells = [f"{r[f'dict {op}']:.2f} / {r[f'index {op}']:.2f} (x{r[f'index {op}'] / r[f'dict {op}']:.1f})"
                 for op in ("set", "miss", "hit")]
        held = f"{r['dict bytes'] / 2**20:.2f} / {r['index bytes'] / 2**20:.2f}"
        per_call = f"{r['dict bytes'] / size:.0f} / {r['index bytes'] / size:.0f}"
        print(f"| {size:,} | {' | '.join(cells)} | {held} | {per_call} |", flush=True)


if __name__ == "__main__":
    main()
