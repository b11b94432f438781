"""How line splitting scales with one huge line: the tap's splitter beside a quadratic one.

A single event line can be tens of megabytes (a huge property). The stream arrives in 256 KiB
chunks; a splitter that re-joins the unfinished tail with every chunk copies the tail again
each time, so doubling the line quadruples the work. The tap's splitter keeps the pieces and
joins them once. This script times both on the same chunks at several line sizes, side by side
in one run, and prints each one's throughput: steady MB/s as the line grows is linear, MB/s
halving with each doubling is quadratic. Nothing is asserted; read the numbers.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25,50,100", help="line sizes in MB, comma list")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        chunks = chunks_of(size)
        tap = min(seconds(split_lines, chunks) for _ in range(args.repeat))
        old = min(seconds(quadratic_split, chunks) for _ in range(args.repeat))
        rows.append((size, tap, old))
    print(
        f"{'MB':>5} {'tap s':>8} {'tap MB/s':>9} {'quadratic s':>12} {'quad MB/s':>10} {'ratio':>7}"
    )
    for size, tap, old in rows:
        print(
            f"{size:>5} {tap:>8.3f} {size / tap:>9.0f} {old:>12.3f} {size / old:>10.1f}"
            f" {old / tap:>6.0f}x"
        )


if __name__ == "__main__":
    main()
