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
# It needs Python 3.11 or newer (tomllib reads uv.lock); PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
venv=$(mktemp -d)/newest
trap 'rm -rf "$(dirname "$venv")"' EXIT
"${PYTHON:-python3}" -m venv "$venv"
"$UV" pip install -q --python "$venv/bin/python" --upgrade --no-cache-dir -e . --group test

echo "== newest releases that differ from uv.lock =="
"$UV" pip freeze -q --python "$venv/bin/python" --exclude-editable | "$venv/bin/python" -c '
import re, sys, tomllib
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
locked = {}
for package in tomllib.load(open("uv.lock", "rb"))["package"]:
    locked.setdefault(norm(package["name"]), set()).add(package.get("version"))
for line in sys.stdin:
    name, _, version = line.strip().partition("==")
    known = locked.get(norm(name))
    if known and version not in known and norm(name) not in {"pip", "setuptools", "wheel"}:
        print(f"  {name}: {\", \".join(sorted(known))} (lock) -> {version}")
'

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
