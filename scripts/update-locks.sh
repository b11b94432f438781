#!/usr/bin/env bash
# Regenerate every pin CI installs from, so a CI result changes only when this repository does:
#   uv.lock                                   the tap with all its dependency groups (.ci/check: uv sync --locked)
#   constraints/tap-mixpanel-parallel.txt     the tap's runtime set, for `meltano install` (meltano.yml pip_url -c)
#   constraints/target-jsonl.txt              target-jsonl and its dependencies, likewise
#   loaders/target-postgres-mixpanel/uv.lock  the loader with its test/lint/build groups (.ci/check, .venv-loader)
#   constraints/target-postgres-mixpanel.txt  the loader's runtime set from that lock, for `meltano install`
#   constraints/lowest-direct.txt             the lowest versions pyproject.toml allows (CI's lowest-versions run)
#
#   bash scripts/update-locks.sh            keep today's pins; add or drop only what pyproject.toml changed
#   bash scripts/update-locks.sh --upgrade  move every pin to the newest release the ranges allow
#
# Run scripts/newest-releases.sh first when upgrading: it shows what the newest releases break.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
upgrade=()
[[ "${1:-}" == "--upgrade" ]] && upgrade=(--upgrade)

"$UV" lock "${upgrade[@]}"
# Constraints for the plugins' own venvs; the universal markers keep them right on every Python.
"$UV" export --frozen --no-default-groups --no-emit-project --no-hashes --format requirements-txt \
    --quiet -o constraints/tap-mixpanel-parallel.txt
compile=("$UV" pip compile --quiet --universal --python-version 3.10 --no-header "${upgrade[@]}")
"${compile[@]}" constraints/target-jsonl.in -o constraints/target-jsonl.txt
# The loader's own lock, and meltano.yml's constraints from it: `meltano install` puts in the
# versions the loader's tests ran against.
loader=(--project loaders/target-postgres-mixpanel)
"$UV" lock "${loader[@]}" "${upgrade[@]}"
"$UV" export "${loader[@]}" --frozen --no-default-groups --no-emit-project --no-hashes \
    --format requirements-txt --quiet -o constraints/target-postgres-mixpanel.txt
"${compile[@]}" pyproject.toml --group pyproject.toml:test --resolution lowest-direct \
    -o constraints/lowest-direct.txt
