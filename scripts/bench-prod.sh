#!/usr/bin/env bash
# TPS and client CPU per transaction for each query mode, direct and through PgBouncer
# (transaction mode), and with TLS (sslmode=require / verify-full). Release build.
# Usage: scripts/bench-prod.sh [seconds per run, default 10] [pool size, default 16]
# Starts its own PostgreSQL (as user postgres) and PgBouncer on free loopback ports and
# stops them (by pg_ctl -D / PID) on exit.
set -euo pipefail
secs=${1:-10}
pool=${2:-16}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/pgdrill
pgbin=${PGDRILL_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
dir=$(mktemp -d /tmp/pgdrill-bench.XXXXXX)
chown postgres: "$dir"
as_pg() { runuser -u postgres -- "$@"; }
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
bport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cleanup() {
  [ -f "$dir/bouncer.pid" ] && kill "$(cat "$dir/bouncer.pid")" 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

# CA + server certificate for localhost.
( cd "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
    -out ca.pem -days 1 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key \
    -out server.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt \
    -days 1 -extfile ext 2>/dev/null
  chown postgres: server.crt server.key ca.pem; chmod 600 server.key )

as_pg "$pgbin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
CONF
as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w start >/dev/null
as_pg "$pgbin/psql" -h "$dir" -p "$port" -U postgres -qc "CREATE ROLE pgdrill LOGIN" \
  -c "CREATE DATABASE pgdrill OWNER pgdrill"

printf '"pgdrill" ""\n' > "$dir/userlist.txt"
cat > "$dir/pgbouncer.ini" <<INI
[databases]
pgdrill = host=127.0.0.1 port=$port dbname=pgdrill
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
logfile = $dir/pgbouncer.log
pidfile = $dir/bouncer.pid
INI
chown postgres: "$dir"/*
as_pg pgbouncer -d "$dir/pgbouncer.ini"
sleep 0.5

run() { # label dsn mode
  local label=$1 dsn=$2 mode=$3
  # Warm-up creates the table and caches; not measured.
  "$bin" --dsn "$dsn" --query-mode "$mode" --rate 0 --pool-size "$pool" --duration 2s \
    --listen 127.0.0.1:0 --log-filter error >/dev/null
  local out
  out=$( { /usr/bin/time -f 'cpu %U %S' "$bin" --dsn "$dsn" --query-mode "$mode" --rate 0 \
      --pool-size "$pool" --duration "${secs}s" --listen 127.0.0.1:0 --log-filter error \
      --summary-json "$dir/s.json" >/dev/null; } 2>&1 )
  python3 - "$label" "$mode" "$dir/s.json" "$out" <<'PY'
import json, sys
label, mode, path, cpu = sys.argv[1:5]
s = json.load(open(path))
u, sy = (float(x) for x in cpu.split()[-2:])
ok = s["successes"]
print(f"| {label} | {mode} | {s['achieved_rate']:.0f} | {s['latency']['p50_ms']:.2f} | "
      f"{s['latency']['p99_ms']:.2f} | {(u + sy) / max(ok, 1) * 1e6:.0f} µs | "
      f"{sum(s['errors'].values())} |")
PY
}

direct="host=127.0.0.1 port=$port user=pgdrill dbname=pgdrill"
echo "| path | query mode | TPS | p50 ms | p99 ms | client CPU/txn | errors |"
echo "|---|---|---|---|---|---|---|"
for mode in prepared unnamed simple; do run "direct, sslmode=disable" "$direct sslmode=disable" $mode; done
for mode in prepared unnamed simple; do run "direct, sslmode=verify-full" \
  "host=localhost hostaddr=127.0.0.1 port=$port user=pgdrill dbname=pgdrill sslmode=verify-full sslrootcert=$dir/ca.pem" $mode; done
run "direct, sslmode=require" "$direct sslmode=require" prepared
for mode in unnamed simple prepared auto; do run "PgBouncer, transaction mode" \
  "host=127.0.0.1 port=$bport user=pgdrill dbname=pgdrill sslmode=disable" $mode; done
