#!/usr/bin/env bash
# Starts a local PostgreSQL for the scaled-out tests and prints its connection URL:
#   export NOISEDA_TEST_POSTGRES="$(scripts/postgres.sh)"
# Installs the Debian package when PostgreSQL is missing (needs root and apt), starts the
# default cluster, and creates the role `noiseda` (password `noiseda`, may create databases;
# each test creates and drops its own database).
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -1)
if [ "$status" != "online" ]; then
  pg_ctlcluster "$version" "$cluster" start >&2
fi
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
for _ in $(seq 1 30); do
  as_postgres psql -p "$port" -qAtc "SELECT 1" >/dev/null 2>&1 && break
  sleep 1
done
as_postgres psql -p "$port" -qAt >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'noiseda') THEN
    CREATE ROLE noiseda LOGIN PASSWORD 'noiseda' CREATEDB;
  END IF;
END $$;
SQL
echo "postgres://noiseda:noiseda@127.0.0.1:${port}/postgres"
