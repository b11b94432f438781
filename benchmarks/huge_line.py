"""How line splitting scales with one huge line: the tap's splitter beside a quadratic one.

A single event line can be tens of megabytes (a huge property). The stream arrives in 256 KiB
chunks; a splitter that re-joins the unfinished tail with every chunk copies the tail again
each time, so doubling the line quadruples the work. The tap's splitter keeps the pieces and
joins them once. This script times both on the same chunks at several line sizes, side by side
in one run, beside a floor: one ``b"".join`` of the chunks, the least any splitter must copy.
The tap staying near 1x the floor at every size is linear; the quadratic splitter's time grows
about 4x per doubling. (Past ~32 MB glibc hands each buffer fresh pages from the OS, so the
floor itself jumps there: compare columns, not rows.) Nothing is asserted.

    .venv/bin/python benchmarks/huge_line.py              # 25, 50, 100 MB
    .venv/bin/python benchmarks/huge_line.py --sizes 5,10,20
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator

from tap_mixpanel_parallel.export.client import CHUNK_BYTES, split_lines


def quadratic_split(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The splitter the tap used to have: ``(tail + chunk).split`` on every chunk."""
    tail = b""
    for chunk in chunks:
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines


def chunks_of(megabytes: int) -> list[bytes]:
    """One line of ``megabytes`` MB and a short one after it, cut into the client's chunks."""
    body = b'{"event":"E","properties":{"time":1,"blob":"' + b"x" * (megabytes * 10**6)
    body += b'"}}\n{"event":"F","properties":{"time":2}}\n'
    return [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)]


def seconds(split: Callable[[Iterable[bytes]], Iterator[bytes]], chunks: list[bytes]) -> float:
    started = time.perf_counter()
    lines = sum(1 for _ in split(chunks))
    elapsed = time.perf_counter() - started
    assert lines == 2, lines
    return elapsed


def join_seconds(chunks: list[bytes]) -> float:
    started = time.perf_counter()
    b"".join(chunks)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25,50,100", help="line sizes in MB, comma list")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        chunks = chunks_of(size)
        floor = min(join_seconds(chunks) for _ in range(args.repeat))
        tap = min(seconds(split_lines, chunks) for _ in range(args.repeat))
        old = min(seconds(quadratic_split, chunks) for _ in range(args.repeat))
        rows.append((size, floor, tap, old))
    print(
        f"{'MB':>5} {'floor s':>8} {'tap s':>8} {'tap/floor':>10} {'quadratic s':>12} {'/floor':>7}"
    )
    for size, floor, tap, old in rows:
        print(
            f"{size:>5} {floor:>8.3f} {tap:>8.3f} {tap / floor:>10.1f}"
            f" {old:>12.3f} {old / floor:>7.0f}"
        )


if __name__ == "__main__":
    main()
