#!/usr/bin/env bash
# Starts a local PostgreSQL for the scaled-out tests and prints its connection URL:
#   export NOISEDA_TEST_POSTGRES="$(scripts/postgres.sh)"
# Installs the Debian package when PostgreSQL is missing (apt-get, as root or through sudo).
# As root: starts the package's default cluster and creates the role `noiseda` (password
# `noiseda`, may create databases). As another user: runs a private cluster owned by that user
# in $TMPDIR (trust authentication on 127.0.0.1, port $NOISEDA_PG_PORT or 55432). Each test
# creates and drops its own database.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"

if [ "$(id -u)" != 0 ]; then
  dir="${TMPDIR:-/tmp}/noiseda-pg-$(id -u)"
  port="${NOISEDA_PG_PORT:-55432}"
  if [ ! -f "$dir/PG_VERSION" ]; then
    "$bin/initdb" -D "$dir" -U noiseda --auth=trust >&2
  fi
  if ! "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >&2
  fi
  echo "postgres://noiseda:noiseda@127.0.0.1:${port}/postgres"
  exit 0
fi

read -r version cluster port status _ < <(pg_lsclusters --no-header | head -1)
if [ "$status" != "online" ]; then
  pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 1 30); do
  runuser -u postgres -- psql -p "$port" -qAtc "SELECT 1" >/dev/null 2>&1 && break
  sleep 1
done
runuser -u postgres -- psql -p "$port" -qAt >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'noiseda') THEN
    CREATE ROLE noiseda LOGIN PASSWORD 'noiseda' CREATEDB;
  END IF;
END $$;
SQL
echo "postgres://noiseda:noiseda@127.0.0.1:${port}/postgres"
