#!/usr/bin/env bash
# The main job in one command, without credentials:
#   bash scripts/demo.sh                    # -> output/events.jsonl
#   bash scripts/demo.sh target-postgres    # -> schema mixpanel_demo (needs PostgreSQL, see README)
#
# From a fresh clone it creates .venv, installs the tap and Meltano into it (pip install -e .
# --group meltano), installs the Meltano plugins (meltano install), starts the project's fake Mixpanel
# server on a free loopback port, runs
#   meltano --environment=demo run --full-refresh tap-mixpanel-parallel[--records] <loader>
# against it, shows what arrived, and stops the server. The `demo` environment in meltano.yml
# holds the fake server's made-up credentials; nothing here talks to the real Mixpanel.
# Optional: DEMO_DAYS, DEMO_EVENTS_PER_DAY, TARGET_JSONL_DESTINATION_PATH (default ./output),
# MELTANO_SYS_DIR_ROOT (default ./.meltano), TARGET_POSTGRES_* for another database.
set -euo pipefail
cd "$(dirname "$0")/.."

LOADER=${1:-target-jsonl}
case "$LOADER" in
    target-jsonl | target-postgres) ;;
    *)
        echo "usage: bash scripts/demo.sh [target-jsonl|target-postgres]" >&2
        exit 2
        ;;
esac
DAYS=${DEMO_DAYS:-60}
EVENTS_PER_DAY=${DEMO_EVENTS_PER_DAY:-500}
# target-jsonl's folder, as meltano.yml sets it unless the variable says otherwise.
OUT_DIR=${TARGET_JSONL_DESTINATION_PATH:-$PWD/output}

export PIP_DISABLE_PIP_VERSION_CHECK=1
export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
export MELTANO_DISABLE_TRACKING=true
export MELTANO_CLI_DISABLE_VERSION_CHECK=true
export MELTANO_ENVIRONMENT=demo

step() { printf '\n==> %s\n' "$*" >&2; }

# 1. The venv, the tap and Meltano (skipped when already there).
if [ ! -x .venv/bin/python ]; then
    step "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
if [ ! -x .venv/bin/meltano ] || [ ! -x .venv/bin/tap-mixpanel-parallel ]; then
    step "pip install -e . --group meltano"
    # pip >= 25.1 installs PEP 735 dependency groups (--group).
    .venv/bin/python -m pip install -q --upgrade "pip>=25.1"
    .venv/bin/python -m pip install -q -e . --group meltano
fi
MELTANO=.venv/bin/meltano

# 2. The plugins of meltano.yml, each in its own venv under .meltano/ (a few seconds).
step "meltano install"
"$MELTANO" --log-level=warning install

# 3. The fake Mixpanel server: DEMO_DAYS (60) days of events, 0.5 s of latency per request.
step "starting the fake Mixpanel server ($DAYS days x $EVENTS_PER_DAY events)"
server_out=$(mktemp)
.venv/bin/python -m tap_mixpanel_parallel.testing.fake_server \
    --start 2024-01-01 --days "$DAYS" --events-per-day "$EVENTS_PER_DAY" --latency 0.5 \
    --port 0 --username demo --secret demo-secret --project-id 1 >"$server_out" &
server_pid=$!
cleanup() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    rm -f "$server_out"
}
trap cleanup EXIT
url=""
for _ in $(seq 1 100); do
    url=$(sed -n 's/^FAKE_MIXPANEL_URL=//p' "$server_out")
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "demo: the fake Mixpanel server did not start" >&2
    exit 1
fi
echo "fake Mixpanel at $url" >&2
export TAP_MIXPANEL_PARALLEL_API_URL="$url"
export TAP_MIXPANEL_PARALLEL_END_DATE
TAP_MIXPANEL_PARALLEL_END_DATE=$(.venv/bin/python -c \
    "import datetime as d; print(d.date(2024, 1, 1) + d.timedelta(days=$DAYS - 1))")

# 4. The export, through Meltano. --full-refresh: the whole range on every demo run.
if [ "$LOADER" = target-jsonl ]; then
    mkdir -p "$OUT_DIR"
    rm -f "$OUT_DIR/events.jsonl" # target-jsonl appends
fi
# target-jsonl reads RECORD messages only: the --records variant sends those instead of BATCH.
EXTRACTOR=tap-mixpanel-parallel
[ "$LOADER" = target-jsonl ] && EXTRACTOR=tap-mixpanel-parallel--records
step "meltano run $EXTRACTOR $LOADER"
"$MELTANO" run --no-install --full-refresh "$EXTRACTOR" "$LOADER"

# 5. What arrived.
step "result"
if [ "$LOADER" = target-jsonl ]; then
    echo "$OUT_DIR/events.jsonl: $(wc -l <"$OUT_DIR/events.jsonl") events; the first one:"
    head -n 1 "$OUT_DIR/events.jsonl" | .venv/bin/python -c \
        'import json, sys; print(json.dumps(json.loads(sys.stdin.read()), indent=2)[:1500])'
elif command -v psql >/dev/null; then
    PGPASSWORD=${TARGET_POSTGRES_PASSWORD:-tap} psql -X -h "${TARGET_POSTGRES_HOST:-127.0.0.1}" \
        -p "${TARGET_POSTGRES_PORT:-5432}" -U "${TARGET_POSTGRES_USER:-tap}" \
        -d "${TARGET_POSTGRES_DATABASE:-tap_test}" -c \
        "SELECT event, count(*), count(DISTINCT insert_id) AS distinct_ids,
                min(time), max(time), max(properties->'plan'->>'tier') AS a_nested_key
           FROM mixpanel_demo.events GROUP BY event ORDER BY event"
fi
echo "state saved by Meltano (demo:$EXTRACTOR-to-$LOADER):"
"$MELTANO" --log-level=warning state get "demo:$EXTRACTOR-to-$LOADER"
