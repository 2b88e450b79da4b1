#!/usr/bin/env bash
# Partitioned queues (issue 15): one queue split into P partitions, measured on this machine.
# Run from anywhere:   bash worker/bench/partitions.sh   (or BENCHES=partitions ./dev bench)
#
# 1. On one private Redis (a redis-server of its own on a free port, no persistence): for each P
#    in PARTS_LIST, N no-op jobs bulk-enqueued into a queue of P partitions, then drained by one
#    worker at concurrency CONC: jobs/s and Redis CPU per processed job (INFO used_cpu), to show
#    the cost per job stays flat as partitions grow.
# 2. The same queue on a private Redis Cluster of 3 masters and 3 replicas (started with
#    `./dev cluster`) against the one Redis, in the same run: jobs/s with 1 partition and with
#    CLUSTER_PARTS (spread over the masters), with each master's Redis CPU per job.
# Both systems are Comet: no peer partitions a queue, so the peer column is Comet on one Redis.
#
# Env knobs: N (50000)  CONC (64)  RUNS (1)  PARTS_LIST ("1 2 4 8")  CLUSTER_PARTS (6)
#   CLUSTER (1; 0 skips part 2)  BUILD (1; 0 = use target/release/comet-bench)
#   MD (<repo>/BENCHMARKS.md; MD= to leave it alone)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

N=${N:-50000}
CONC=${CONC:-64}
RUNS=${RUNS:-1}
PARTS_LIST=${PARTS_LIST:-"1 2 4 8"}
CLUSTER_PARTS=${CLUSTER_PARTS:-6}
MD=${MD-$ROOT/BENCHMARKS.md}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/comet-bench
for tool in redis-server redis-cli jq; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [ "${BUILD:-1}" = 1 ]; then
  echo "== building comet-bench (release)" >&2
  cargo build --release --quiet -p comet-worker --bin comet-bench >&2
fi

DIR=$(mktemp -d /tmp/comet-partitions.XXXXXX)
CLUSTER_PID=
cleanup() {
  [ -f "$DIR/redis.pid" ] && kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true
  if [ -n "$CLUSTER_PID" ]; then
    kill "$CLUSTER_PID" 2>/dev/null || true
    wait "$CLUSTER_PID" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT

# a private Redis: nothing else's load or keys in its INFO
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no \
  --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" >/dev/null
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
ONE="redis://127.0.0.1:$PORT"

# Redis CPU seconds (user + sys) of each cluster master, in port order (CLUSTER_MASTERS)
masters_cpu() {
  local port
  for port in $CLUSTER_MASTERS; do
    redis-cli -p "$port" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%s ", s}'
  done
}

# one fill + drain; prints the `work` JSON line (on a cluster, with each master's Redis CPU per
# processed job: how the load spread)
run() { # url partitions
  local url=$1 parts=$2 before after line
  "$BIN" --redis-url "$url" --prefix bench-partitions --partitions "$parts" clean 2>/dev/null
  "$BIN" --redis-url "$url" --prefix bench-partitions --partitions "$parts" fill --n "$N" 2>"$DIR/fill.err" ||
    { grep -v '^  ' "$DIR/fill.err" >&2; return 1; }
  [[ $url == redis+cluster://* ]] && before=$(masters_cpu)
  line=$("$BIN" --redis-url "$url" --prefix bench-partitions --partitions "$parts" work --n "$N" \
    --concurrency "$CONC" 2>/dev/null | grep '"system":"comet"')
  if [[ $url == redis+cluster://* ]]; then
    after=$(masters_cpu)
    line=$(jq -c --arg b "$before" --arg a "$after" --argjson n "$N" \
      '. + {masters_cpu_us_per_job: ([$b, $a] | map(split(" ") | map(select(. != "") | tonumber))
        | transpose | map(((.[1] - .[0]) * 1e6 / $n * 10 | round) / 10))}' <<<"$line")
  fi
  echo "$line"
  "$BIN" --redis-url "$url" --prefix bench-partitions --partitions "$parts" clean 2>/dev/null
}

RESULTS=$DIR/results.jsonl
echo "== one Redis ($ONE): N=$N, concurrency $CONC, partitions: $PARTS_LIST" >&2
for r in $(seq "$RUNS"); do
  for p in $PARTS_LIST; do
    run "$ONE" "$p" | jq -c --arg where one '. + {where: $where}' >>"$RESULTS"
    tail -1 "$RESULTS" >&2
  done
done

if [ "${CLUSTER:-1}" = 1 ]; then
  echo "== Redis Cluster (3 masters, 3 replicas) against one Redis, same run" >&2
  ./dev cluster >"$DIR/cluster.log" 2>&1 &
  CLUSTER_PID=$!
  for _ in $(seq 150); do
    grep -q 'REDIS_URL=' "$DIR/cluster.log" && break
    sleep 0.2
  done
  CLUSTER_URL=$(grep -o 'REDIS_URL=[^ ]*' "$DIR/cluster.log" | head -1 | cut -d= -f2- | tr -d '\r' | sed 's/\x1b\[[0-9;]*m//g')
  [ -n "$CLUSTER_URL" ] || { cat "$DIR/cluster.log" >&2; exit 1; }
  SEED=${CLUSTER_URL#redis+cluster://127.0.0.1:}
  SEED=${SEED%%,*}
  # a new cluster may refuse a moment longer (nodes still learning the slot map): wait until it
  # answers three times in a row
  ok=0
  for _ in $(seq 100); do
    if "$BIN" --redis-url "$CLUSTER_URL" --prefix bench-partitions clean 2>/dev/null; then
      ok=$((ok + 1))
      [ "$ok" -ge 3 ] && break
    else
      ok=0
    fi
    sleep 0.3
  done
  [ "$ok" -ge 3 ] || { echo "the cluster does not answer" >&2; exit 1; }
  # the masters: nodes that serve slots (a replica's line lists none)
  CLUSTER_MASTERS=$(redis-cli -p "$SEED" cluster nodes | awk 'NF > 8 {split($2, a, "[:@]"); print a[2]}' | sort -n | tr '\n' ' ')
  [ "$(wc -w <<<"$CLUSTER_MASTERS")" = 3 ] || { echo "expected 3 masters: $CLUSTER_MASTERS" >&2; exit 1; }
  for r in $(seq "$RUNS"); do
    for p in 1 "$CLUSTER_PARTS"; do
      run "$CLUSTER_URL" "$p" | jq -c --arg where cluster '. + {where: $where}' >>"$RESULTS"
      tail -1 "$RESULTS" >&2
      run "$ONE" "$p" | jq -c --arg where one '. + {where: $where}' >>"$RESULTS"
      tail -1 "$RESULTS" >&2
    done
  done
fi

TABLE=$DIR/table.md
{
  echo "| where | partitions | jobs/s (c=$CONC) | Redis CPU µs per job | on each master |"
  echo "|---|---:|---:|---:|---|"
  jq -r '[.where, .partitions, (.jobs_per_s|floor),
      (if .redis_cpu_us_per_job then (.redis_cpu_us_per_job*10|round/10)
       else (.masters_cpu_us_per_job | add * 10 | round / 10) end),
      (if .masters_cpu_us_per_job then (.masters_cpu_us_per_job | map(tostring) | join(" / ")) else "" end)]
    | "| \(.[0]) | \(.[1]) | \(.[2]) | \(.[3]) | \(.[4]) |"' "$RESULTS"
} >"$TABLE"
cat "$TABLE"

if [ -n "$MD" ]; then
  {
    echo
    echo "## Partitioned queues: a run of $(date -u '+%Y-%m-%d %H:%M UTC') ($(git rev-parse --short HEAD))"
    echo
    echo "\`N=$N CONC=$CONC RUNS=$RUNS bash worker/bench/partitions.sh\` ($(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1))"
    echo
    cat "$TABLE"
  } >>"$MD"
  echo "== recorded in $MD" >&2
fi
