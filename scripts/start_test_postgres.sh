#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the test suite and print its URL (for AFTERCARE_TEST_PG_URL).
# Usage: eval "$(bash scripts/start_test_postgres.sh)"   — needs Debian's postgresql package.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "echo 'PostgreSQL is not installed: apt-get install postgresql' >&2"; exit 1; }
port=${AFTERCARE_TEST_PG_PORT:-55432}
dir=$(mktemp -d /tmp/aftercare-pg.XXXXXX)
chown postgres:postgres "$dir" 2>/dev/null || true
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
  -l "$dir/log" -w start >/dev/null
echo "export AFTERCARE_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
echo "export AFTERCARE_TEST_PG_DIR=$dir"
