#!/bin/sh
# Initialise the cluster on first start (empty volume), then become the server as postgres.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
USER_NAME=${POSTGRES_USER:-postgres}
DB_NAME=${POSTGRES_DB:-$USER_NAME}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  PWFILE=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$PWFILE"
  chown postgres "$PWFILE"
  as_postgres initdb -D "$PGDATA" -U "$USER_NAME" --pwfile="$PWFILE" \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$PWFILE"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=" -w start >/dev/null
  if [ "$DB_NAME" != "postgres" ]; then
    as_postgres createdb -U "$USER_NAME" "$DB_NAME"
  fi
  as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  postgres -D "$PGDATA" -c listen_addresses='*'
