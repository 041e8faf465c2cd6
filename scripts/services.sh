#!/usr/bin/env bash
# Makes sure Redis and PostgreSQL are installed and running on 127.0.0.1,
# installing them from Debian's packages and starting them when they are
# missing, and that the contract's database and role exist:
#   DATABASE_URL=postgres://dwp_user:dwp_password@localhost:5432/dwp_main
# The role may create databases, so tests can make a fresh one each.
# Idempotent: on a machine where everything runs it only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server redis-tools
  fi
  # The TLS Redis tests make a throw-away CA with openssl.
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    echo "==> starting Redis on 127.0.0.1:$REDIS_PORT"
    local dir=${TMPDIR:-/tmp}/dwp-redis
    mkdir -p "$dir"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir "$dir" --logfile "$dir/redis.log"
    wait_for "redis-cli -h 127.0.0.1 -p $REDIS_PORT ping" 30
  fi
  echo "Redis: up on 127.0.0.1:$REDIS_PORT"
}

# psql as the superuser: over TCP when trust auth allows it, else as the
# postgres system user over the local socket.
pg_super() {
  if psql -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    psql -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q "$@"
  else
    as_root runuser -u postgres -- psql -w -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -q "$@"
  fi
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  if ! pg_isready -h 127.0.0.1 -p "$PG_PORT" -q; then
    local version
    version=$(newest_in /etc/postgresql)
    if [ -z "$version" ]; then
      version=$(newest_in /usr/lib/postgresql)
      as_root pg_createcluster "$version" main --port "$PG_PORT" >/dev/null
    fi
    echo "==> starting PostgreSQL $version on 127.0.0.1:$PG_PORT"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for "pg_isready -h 127.0.0.1 -p $PG_PORT -q" 60
  fi
  pg_super -tAc "select 1 from pg_roles where rolname = 'dwp_user'" | grep -q 1 ||
    pg_super -c "create role dwp_user login createdb password 'dwp_password'"
  pg_super -tAc "select 1 from pg_database where datname = 'dwp_main'" | grep -q 1 ||
    pg_super -c "create database dwp_main owner dwp_user"
  echo "PostgreSQL: up on 127.0.0.1:$PG_PORT (database dwp_main, role dwp_user)"
}

ensure_redis
ensure_postgres
