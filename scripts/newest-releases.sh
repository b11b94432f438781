#!/usr/bin/env bash
# Run the suite against the newest releases pyproject.toml allows, ignoring uv.lock and
# constraints/, and print what broke. Run it before `scripts/update-locks.sh --upgrade`: a new
# release that breaks us is found here, on purpose, instead of in CI after the lock moves.
#
#   bash scripts/newest-releases.sh              in-process tests and the CLI tests (~8 min)
#   bash scripts/newest-releases.sh -m "not cli" in-process tests only; other pytest args too
#
# The Meltano end-to-end tests are left out: their plugins install from constraints/, which this
# script does not change. It prints the versions that differ from the lock, then pytest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
venv=$(mktemp -d)/newest
trap 'rm -rf "$(dirname "$venv")"' EXIT
"${PYTHON:-python3}" -m venv "$venv"
"$UV" pip install -q --python "$venv/bin/python" --upgrade --no-cache-dir -e . --group test

echo "== newest releases that differ from uv.lock =="
"$UV" pip freeze --python "$venv/bin/python" --exclude-editable | while IFS='=' read -r name _ version; do
    name=$(tr 'A-Z_.' 'a-z--' <<<"$name")
    locked=$(sed -n "/^name = \"${name}\"$/{n;s/^version = \"\\(.*\\)\"$/\\1/p;q}" uv.lock)
    if [[ -n "$locked" && "$locked" != "$version" ]]; then
        echo "  $name: $locked (lock) -> $version"
    fi
done

echo "== tests under the newest releases =="
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not meltano and not postgres" -rfE "$@" \
    || status=$?
if [[ $status -eq 0 ]]; then
    echo "newest releases: nothing broke"
else
    echo "newest releases: the failures above broke (pytest exit $status)"
fi
exit $status
