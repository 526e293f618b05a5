#!/bin/sh
# Runs once, from /docker-entrypoint-initdb.d, when the primary's data
# directory is created by the official postgres image's entrypoint.
# Creates the pgdrill role/database owner and the replication role, and lets
# the standby connect for streaming replication.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=pgdrill_password="$PGDRILL_PASSWORD" \
  --set=replication_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE pgdrill LOGIN PASSWORD :'pgdrill_password';
-- pgdrill reaches the server through PgBouncer, which drops its startup option:
-- the role's own default bounds its statements (PgBouncer pools per role, so no
-- other client gets it). Keep it equal to pgdrill's --statement-timeout.
ALTER ROLE pgdrill SET statement_timeout = '5s';
ALTER DATABASE pgdrill OWNER TO pgdrill;
ALTER SCHEMA public OWNER TO pgdrill;
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'replication_password';
SQL

# pg_hba's "all" does not match replication connections.
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
