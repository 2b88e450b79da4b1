#!/usr/bin/env bash
# What REDIS_WAIT_REPLICAS=1 costs: comet-bench against a private Redis master with one replica
# (both started here on free ports, no persistence), each shape without and with WAIT in the
# same run.   bash worker/bench/wait.sh     (or BENCHES=wait ./dev bench)
#
# Shapes: enqueue of N no-op jobs single awaited, single with 64 in flight, bulk in chunks of
# 1000 (job outcomes never wait, so processing is not measured here).
# Env knobs: N (20000)  BUILD (1; 0 = use the existing target/release/comet-bench)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"
N=${N:-20000}
if [[ ${BUILD:-1} == 1 ]]; then cargo build --release --quiet --bin comet-bench; fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/comet-bench
DIR=$(mktemp -d /tmp/comet-wait-bench.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MASTER=$(free_port)
REPLICA=$(free_port)
cleanup() {
  redis-cli -p "$MASTER" shutdown nosave >/dev/null 2>&1 || true
  redis-cli -p "$REPLICA" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
redis-server --port "$MASTER" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
  --daemonize yes --logfile "$DIR/master.log"
redis-server --port "$REPLICA" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
  --daemonize yes --logfile "$DIR/replica.log" --replicaof 127.0.0.1 "$MASTER"
for _ in $(seq 100); do
  redis-cli -p "$REPLICA" info replication 2>/dev/null | grep -q 'master_link_status:up' && break
  sleep 0.1
done
export BENCH_REDIS_URL="redis://127.0.0.1:$MASTER" BENCH_PREFIX=bench-wait

run() { # wait, then the comet-bench arguments; prints the jobs/s
  local wait=$1
  shift
  "$BIN" clean >/dev/null 2>&1
  REDIS_WAIT_REPLICAS=$wait "$BIN" "$@" 2>/dev/null | tail -1 | jq -r '.jobs_per_s'
}
printf '| Shape (%s jobs, master + 1 replica on this machine) | jobs/s, WAIT off | jobs/s, `REDIS_WAIT_REPLICAS=1` | cost |\n|---|---:|---:|---:|\n' "$N"
row() {
  local name=$1 off on
  shift
  off=$(run 0 "$@")
  on=$(run 1 "$@")
  printf '| %s | %.0f | %.0f | %s |\n' "$name" "$off" "$on" \
    "$(python3 -c "print(f'{(1 - $on / $off) * 100:.0f} % fewer')")"
}
row "enqueue, single awaited" enqueue --mode single --n "$N"
row "enqueue, single, 64 in flight" enqueue --mode single-par --n "$N" --par 64
row "enqueue, bulk (chunks of 1000)" enqueue --mode bulk --n "$N"
