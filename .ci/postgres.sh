#!/usr/bin/env bash
# A local PostgreSQL for the tests of the production Dagster instance (deploy/dagster.postgres.yaml).
#
# As root on Debian: installs `postgresql` when missing, starts its cluster listening on loopback
# only, creates the login role `scanlens` (CREATEDB: each test run makes and drops its own database)
# and the database `scanlens_test`, then prints the URL on stdout (everything else goes to stderr):
#
#   export SCANLENS_TEST_POSTGRES_URL="$(bash .ci/postgres.sh)"
#
# Idempotent: run it again and it only checks. The password is a throwaway for a loopback-only
# test server; override it with SCANLENS_PG_PASSWORD.
set -euo pipefail

ROLE=scanlens
DB=scanlens_test
PASSWORD="${SCANLENS_PG_PASSWORD:-scanlens-test}"

say() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "needs root (installs and starts the Debian PostgreSQL cluster)"; exit 1
fi

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || { say "postgresql is not installed and apt-get is missing"; exit 1; }
  say "installing postgresql (apt-get)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

# The newest cluster (Debian's package creates "<version> main"); make one if there is none.
read -r VERSION CLUSTER PORT _ < <(pg_lsclusters -h | sort -V | tail -n 1) || true
if [ -z "${VERSION:-}" ]; then
  VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
  CLUSTER=main
  say "creating cluster $VERSION/$CLUSTER"
  pg_createcluster "$VERSION" "$CLUSTER" >&2
  read -r VERSION CLUSTER PORT _ < <(pg_lsclusters -h | grep -E "^$VERSION +$CLUSTER " )
fi

# Loopback only (a conf.d drop-in: Debian's postgresql.conf includes conf.d/*.conf).
CONF="/etc/postgresql/$VERSION/$CLUSTER/conf.d/scanlens-loopback.conf"
WANT="listen_addresses = '127.0.0.1'"
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANT" ]; then
  echo "$WANT" > "$CONF"
  if pg_ctlcluster "$VERSION" "$CLUSTER" status >/dev/null 2>&1; then
    pg_ctlcluster "$VERSION" "$CLUSTER" restart >&2
  fi
fi

if ! pg_ctlcluster "$VERSION" "$CLUSTER" status >/dev/null 2>&1; then
  say "starting cluster $VERSION/$CLUSTER on 127.0.0.1:$PORT"
  pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi
for _ in $(seq 60); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || { say "the server does not answer on 127.0.0.1:$PORT"; exit 1; }

psql_admin() { runuser -u postgres -- psql -p "$PORT" -X -q -v ON_ERROR_STOP=1 "$@"; }

# Role: created once; its password (and CREATEDB) reset on every run so the printed URL is right.
psql_admin -v role="$ROLE" -v pw="$PASSWORD" >&2 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role')
\gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pw')
\gexec
SQL
psql_admin -v role="$ROLE" -v db="$DB" >&2 <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')
\gexec
SQL

echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
