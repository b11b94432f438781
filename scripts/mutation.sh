#!/usr/bin/env bash
# Mutation testing of the pure logic where a silent slip loses or duplicates data, and its score
# per module. Not part of CI: it takes 3-4 minutes on two idle cores (see docs/development.md).
#
#   bash scripts/mutation.sh            # fresh run, then the scores
#   bash scripts/mutation.sh --report   # only the scores of the last run (mutants/ kept)
#   bash scripts/mutation.sh 'tap_mixpanel_parallel.query.paging.*'   # re-run these mutants
#                                       # of the last run (after a new test), then the scores
#
# From a clean clone, after the normal install (.ci/check's: python3 -m venv .venv, uv from the
# lock, uv sync --locked --group dev), it adds the `mutation` dependency group (mutmut, pinned in
# uv.lock) to .venv and runs mutmut on the modules
# and the fast tests listed in pyproject.toml [tool.mutmut] (only_mutate,
# pytest_add_cli_args_test_selection): that is the one list to edit when a module moves.
# mutmut copies the tree into mutants/ (git-ignored) and keeps its results there.
# MUTATION_JOBS sets mutmut's parallel workers (default 2). Exits 1 when a module scores under
# MUTATION_GOAL percent (default 85).
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
JOBS=${MUTATION_JOBS:-2}
GOAL=${MUTATION_GOAL:-85}

if [[ ! -x .venv/bin/uv ]]; then
    echo "no .venv with uv: install as .ci/check does (README, Install)" >&2
    exit 2
fi

if [[ "${1:-}" != "--report" ]]; then
    UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync -q --locked --group dev --group mutation
    [[ $# -eq 0 ]] && rm -rf mutants
    start=$(date +%s)
    # mutmut redraws a progress line many times a second; keep the last state only.
    .venv/bin/mutmut run --max-children "$JOBS" "$@" | tr '\r' '\n' | tail -n 1
    echo "mutmut run took $(($(date +%s) - start)) s with $JOBS workers"
fi

.venv/bin/mutmut results --all true | .venv/bin/python scripts/mutation_score.py --goal "$GOAL"
