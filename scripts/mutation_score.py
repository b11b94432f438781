"""Per-module mutation scores from ``mutmut results --all true`` (read on stdin).

Run by scripts/mutation.sh. A mutant counts as killed when a test failed on it or it ran into
mutmut's timeout (an endless loop is caught); "no tests" and "survived" count against the score.
Every module listed in pyproject.toml [tool.mutmut] only_mutate gets a line, so a moved module
shows up as 0 mutants instead of silently dropping out.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict

from mutmut.configuration import config

KILLED = {"killed", "timeout", "caught by type check"}


def module_of(mutant: str) -> str:
    """``pkg.mod.x_func__mutmut_3`` / ``pkg.mod.xǁClassǁmethod__mutmut_3`` -> ``pkg.mod``."""
    return mutant.split("__mutmut_")[0].rsplit(".", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--goal", type=float, default=85.0)
    goal = parser.parse_args().goal

    # mutmut's own reading of [tool.mutmut], on every Python the project supports.
    modules = [p.removesuffix(".py").replace("/", ".") for p in config().only_mutate]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in sys.stdin:
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        module = module_of(name)
        counts[module][status] += 1
        if status not in KILLED:
            survivors[module].append(f"{name} ({status})")

    below = []
    print(f"{'module':<45} {'killed':>7} {'total':>6} {'score':>7}  other")
    for module in sorted(set(modules) | set(counts)):
        c = counts[module]
        total = sum(c.values())
        killed = sum(c[s] for s in KILLED)
        score = 100.0 * killed / total if total else 0.0
        other = ", ".join(f"{n} {s}" for s, n in sorted(c.items()) if s != "killed")
        print(f"{module:<45} {killed:>7} {total:>6} {score:>6.1f}%  {other}")
        if score < goal:
            below.append(module)
    for module in sorted(survivors):
        print(f"\nnot killed in {module} (mutmut show NAME for the diff):")
        for entry in survivors[module]:
            print(f"  {entry}")
    if below:
        print(f"\nunder {goal:g}%: {', '.join(below)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
