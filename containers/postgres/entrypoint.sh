#!/bin/sh
# PostgreSQL in the foreground, as the official image starts it for the local stack: on the first
# start (no cluster in $PGDATA) create one whose superuser is $POSTGRES_USER with
# $POSTGRES_PASSWORD, accept password logins from other containers, and run
# /docker-entrypoint-initdb.d/*.sql once (the stack's databases and users).
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # a server for the init scripts alone: unix socket only, so nobody connects before they ran
    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start
    for script in /docker-entrypoint-initdb.d/*.sql; do
        [ -e "$script" ] || continue
        echo "running $script"
        psql -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname=postgres --file="$script"
    done
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
