#!/bin/sh
# Streaming standby for the compose drill stack. On first start (empty data
# directory) clones the primary with pg_basebackup, which also writes
# standby.signal and primary_conninfo (-R) and creates the replication slot
# (-C -S standby1); then runs postgres. Runs as the postgres user.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${PRIMARY_HOST:=primary}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "standby: waiting for $PRIMARY_HOST"
  until pg_isready --host="$PRIMARY_HOST" --port=5432 --username=replicator --quiet; do
    sleep 1
  done
  echo "standby: cloning $PRIMARY_HOST into $PGDATA"
  pg_basebackup \
    --dbname="host=$PRIMARY_HOST port=5432 user=replicator password=$REPLICATION_PASSWORD application_name=standby1" \
    --pgdata="$PGDATA" \
    --wal-method=stream --checkpoint=fast \
    --write-recovery-conf --create-slot --slot=standby1 \
    --progress
  chmod 0700 "$PGDATA"
fi

exec postgres -c listen_addresses='*' -c hot_standby=on
