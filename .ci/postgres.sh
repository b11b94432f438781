#!/usr/bin/env bash
# Start the local PostgreSQL 15 cluster and provision role `tap` / database `tap_test`.
# Idempotent: safe to run any number of times. Must run as root.
set -euo pipefail

# psql (run as postgres) warns if it cannot access the caller's cwd (e.g. /root).
cd /

PG_VERSION=15
PG_CLUSTER=main
PG_PORT=5432

# 1. Start the cluster unless it is already online.
if ! pg_lsclusters --no-header "$PG_VERSION" "$PG_CLUSTER" 2>/dev/null | grep -q online; then
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
fi

# 2. Wait (up to ~30 s) until it accepts TCP connections.
for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
        break
    fi
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || {
    echo "postgres.sh: PostgreSQL did not become ready" >&2
    tail -n 20 "/var/log/postgresql/postgresql-${PG_VERSION}-${PG_CLUSTER}.log" >&2 || true
    exit 1
}

# 3. Role (create or reset password/attributes) -- idempotent via DO block.
su postgres -c "psql -X -q -v ON_ERROR_STOP=1 -p $PG_PORT -d postgres" <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tap') THEN
        CREATE ROLE tap LOGIN CREATEDB SUPERUSER PASSWORD 'tap';
    ELSE
        ALTER ROLE tap LOGIN CREATEDB SUPERUSER PASSWORD 'tap';
    END IF;
END
$$;
SQL

# 4. Database (CREATE DATABASE cannot run inside DO/transaction, so use \gexec).
su postgres -c "psql -X -q -v ON_ERROR_STOP=1 -p $PG_PORT -d postgres" <<'SQL'
SELECT 'CREATE DATABASE tap_test OWNER tap'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tap_test')\gexec
SQL

# 5. Verify password auth over TCP.
PGPASSWORD=tap psql -X -q -At -h 127.0.0.1 -p "$PG_PORT" -U tap -d tap_test \
    -v ON_ERROR_STOP=1 -c 'SELECT 1' >/dev/null
