#!/usr/bin/env bash
# A PostgreSQL server of the project's own (Debian's postgresql 15) on 127.0.0.1: data in $HERMES_HOME/pg,
# port HERMES_PG_PORT (default 5433), socket dir $HERMES_HOME/pg-run, database + role `hermes` with the
# password HERMES_PG_PASSWORD (generated into secrets.env). Runs as the `postgres` user when started as root.
# usage: infra/postgres.sh start|stop|url
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"
port="${HERMES_PG_PORT:-5433}"
data="$HERMES_HOME/pg"; sock="$HERMES_HOME/pg-run"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-start}" in
  start)
    mkdir -p "$data" "$sock"
    [ "$(id -u)" = 0 ] && chown postgres "$data" "$sock" && chmod 700 "$data"
    if [ ! -f "$data/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    fi
    if ! as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_pg "$bin/pg_ctl" -D "$data" -l "$data/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $sock" start >/dev/null
    fi
    as_pg "$bin/psql" -h "$sock" -p "$port" -U postgres -q -v ON_ERROR_STOP=1 -d postgres <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hermes') THEN
    CREATE ROLE hermes LOGIN PASSWORD '$HERMES_PG_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE hermes OWNER hermes' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'hermes')\gexec
SQL
    echo "postgresql ready on 127.0.0.1:$port (database hermes)"
    ;;
  stop)
    [ -f "$data/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 && echo "stopped postgresql" || true
    ;;
  url) echo "postgresql+psycopg://hermes:$HERMES_PG_PASSWORD@127.0.0.1:$port/hermes" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
