#!/usr/bin/env bash
# Comet vs BullMQ, in one invocation on this machine; prints one table with the ratios and
# records it in BENCHMARKS.md.  Run from anywhere:   bash worker/bench/run.sh   (or ./dev bench)
#
# Both systems run the same shapes (see ../shared/bench/peers/README.md): enqueue of N no-op jobs
# (bulk in chunks of 1000, single awaited, single with 64 in flight), processing of N jobs
# enqueued beforehand by one worker process at each concurrency in CONCS (peak RSS via
# /usr/bin/time -v), and enqueue->start latency at LAT_RATE jobs/s for LAT_SECS s.  Every timed
# run goes through the peers' lock + noise guard (lib.sh, guard.py).
#
# Env knobs:
#   N (50000)  RUNS (1)  CONCS ("1 16 64")  LAT_RATE (500)  LAT_SECS (10)  LAT_CONCS ("16")
#   PARTS ("enqueue process latency")   SYSTEMS ("comet bullmq")
#   PEERS (<repo>/../shared/bench/peers, else /work/shared/bench/peers)
#   BULLMQ_RESULTS: an existing bullmq JSON-lines file to use instead of running BullMQ
#   MD (<repo>/BENCHMARKS.md; MD= to leave it alone)   OUT (target/bench/<date>: raw results)
#   LOCK (/tmp/bench.lock; LOCK= disables)  MAX_FOREIGN (0.08)  TRIES (4)   [peers' lib.sh]
#   QUIET_WAIT (300: most seconds guard.py waits for an idle machine before a run)
#   REDIS_HOST (127.0.0.1) REDIS_PORT (6379)  BENCH_PREFIX (bench-comet)  JOB_FETCH_BATCH
#   BUILD (1; 0 = use the existing target/release/comet-bench)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

N=${N:-50000}
RUNS=${RUNS:-1}
CONCS=${CONCS:-"1 16 64"}
LAT_RATE=${LAT_RATE:-500}
LAT_SECS=${LAT_SECS:-10}
LAT_CONCS=${LAT_CONCS:-"16"}
PARTS=${PARTS:-"enqueue process latency"}
SYSTEMS=${SYSTEMS:-"comet bullmq"}
export REDIS_HOST=${REDIS_HOST:-127.0.0.1}
export REDIS_PORT=${REDIS_PORT:-6379}
export BENCH_REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT"
export BENCH_PREFIX=${BENCH_PREFIX:-bench-comet}
MD=${MD-$ROOT/BENCHMARKS.md}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/target/bench/$STAMP}
mkdir -p "$OUT"

if [ -z "${PEERS:-}" ]; then
  PEERS=$ROOT/../shared/bench/peers
  [ -f "$PEERS/lib.sh" ] || PEERS=/work/shared/bench/peers
fi
[ -f "$PEERS/lib.sh" ] || { echo "peer benchmarks not found (set PEERS=...)" >&2; exit 1; }
PEERS=$(cd "$PEERS" && pwd)
for tool in redis-cli jq flock python3 /usr/bin/time; do
  command -v "$tool" > /dev/null || { echo "missing $tool (see BENCHMARKS.md, Requirements)" >&2; exit 1; }
done
redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping > /dev/null || { echo "Redis not reachable at $BENCH_REDIS_URL" >&2; exit 1; }

# The peers' scripts run from a copy under target/ so that ../shared is never written to
# (BullMQ's run.sh installs node_modules beside itself; the copy keeps it between runs).
WORK=$ROOT/target/bench/peers
mkdir -p "$WORK/bullmq"
cp "$PEERS/lib.sh" "$PEERS/guard.py" "$WORK/"
# QUIET_WAIT: how long guard.py waits for an idle machine before each run (its default: 300 s).
export QUIET_WAIT=${QUIET_WAIT:-300}
sed -i 's|guard.py" --report|guard.py" --quiet-wait "$QUIET_WAIT" --report|' "$WORK/lib.sh"
grep -q -- '--quiet-wait "$QUIET_WAIT"' "$WORK/lib.sh" || echo "note: QUIET_WAIT not applied (lib.sh changed)" >&2
for f in run.sh bullmq_bench.js package.json package-lock.json; do
  if ! cmp -s "$PEERS/bullmq/$f" "$WORK/bullmq/$f"; then
    cp "$PEERS/bullmq/$f" "$WORK/bullmq/$f"
    case $f in package*) rm -rf "$WORK/bullmq/node_modules" ;; esac
  fi
done

echo "== bench: N=$N RUNS=$RUNS CONCS='$CONCS' LAT_CONCS='$LAT_CONCS' LAT=${LAT_RATE}/s x ${LAT_SECS}s PARTS='$PARTS' SYSTEMS='$SYSTEMS'" >&2
echo "== raw results in $OUT" >&2
T_START=$(date +%s)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

# ---------------------------------------------------------------------------------- Comet --
run_comet() {
  if [ "${BUILD:-1}" = 1 ]; then
    echo "== building comet-bench (release)" >&2
    cargo build --release --quiet -p comet-worker --bin comet-bench >&2
  fi
  local B="$ROOT/target/release/comet-bench"
  [ -x "$B" ] || { echo "no $B (BUILD=0 needs a previous build)" >&2; exit 1; }
  TMP=$(mktemp -d)
  # lib.sh's helpers: locked, guarded, emit (they use TMP, RUN, RESULTS, FOREIGN)
  RESULTS=$OUT/comet.jsonl
  source "$WORK/lib.sh"
  local TIME="/usr/bin/time -v -o $TMP/time.txt"
  # The worker's own log lines share stdout with the result: keep only the result line.
  result() { grep -F '"system":"comet"' "$TMP/raw.json" > "$TMP/out.json" || { cat "$TMP/raw.json" >&2; exit 1; }; }
  for RUN in $(seq 1 "$RUNS"); do
    for part in $PARTS; do
      case $part in
        enqueue)
          for mode in bulk single single-par; do
            guarded "$B clean 2>/dev/null && $TIME $B enqueue --mode $mode --n $N --chunk 1000 --par 64 > $TMP/raw.json"
            result; emit "$TMP/out.json" >&2
          done ;;
        process)
          for c in $CONCS; do
            guarded "$B clean 2>/dev/null && $B fill --n $N && $TIME $B work --n $N --concurrency $c > $TMP/raw.json"
            result; emit "$TMP/out.json" >&2
          done ;;
        latency)
          for c in $LAT_CONCS; do
            guarded "$B clean 2>/dev/null && rm -f $TMP/worker.err
              $TIME $B lat-worker --n $((LAT_RATE * LAT_SECS)) --concurrency $c > $TMP/raw.json 2> $TMP/worker.err &
              wp=\$!
              until grep -qs READY $TMP/worker.err; do kill -0 \$wp 2>/dev/null || exit 1; sleep 0.1; done
              $B lat-producer --rate $LAT_RATE --duration $LAT_SECS 2> $TMP/producer.err
              wait \$wp"
            result
            emit "$TMP/out.json" "{\"offered_rate\": $(jq -r .achieved_rate "$TMP/producer.err")}" >&2
          done ;;
      esac
    done
  done
  "$B" clean 2>/dev/null
  rm -rf "$TMP"
}

# --------------------------------------------------------------------------------- BullMQ --
run_bullmq() {
  if [ -n "${BULLMQ_RESULTS:-}" ]; then
    cp "$BULLMQ_RESULTS" "$OUT/bullmq.jsonl"
    return
  fi
  # BullMQ's parts have the same names; "keep" (results kept) is left out unless asked for.
  N=$N RUNS=$RUNS CONCS=$CONCS LAT_RATE=$LAT_RATE LAT_SECS=$LAT_SECS LAT_CONCS=$LAT_CONCS \
    PARTS=$PARTS RESULTS=$OUT/bullmq.jsonl bash "$WORK/bullmq/run.sh" >&2
}

for s in $SYSTEMS; do
  echo "== $s" >&2
  case $s in
    comet) run_comet ;;
    bullmq) run_bullmq ;;
    *) echo "unknown system $s" >&2; exit 1 ;;
  esac
done
touch "$OUT/comet.jsonl" "$OUT/bullmq.jsonl"

# ---------------------------------------------------------------------------------- table --
REDIS_VERSION=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" INFO server | awk -F: '/^redis_version/{print $2}' | tr -d '\r')
CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal/{printf "%.1f", $2 / 1048576}' /proc/meminfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT+dirty"
REF=()
[ -f "$PEERS/results/bullmq.jsonl" ] && REF=(--reference "$PEERS/results/bullmq.jsonl")
python3 "$HERE/table.py" "$OUT/comet.jsonl" "$OUT/bullmq.jsonl" "${REF[@]}" \
  --md "$MD" --command "bash worker/bench/run.sh" \
  --env "N=$N RUNS=$RUNS CONCS='$CONCS' LAT_RATE=$LAT_RATE LAT_SECS=$LAT_SECS LAT_CONCS='$LAT_CONCS'${JOB_FETCH_BATCH:+ JOB_FETCH_BATCH=$JOB_FETCH_BATCH}" \
  --machine "$(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB RAM, $(uname -sr)" \
  --redis "$REDIS_VERSION" --node "$(node --version 2>/dev/null || echo none)" \
  --rustc "$(rustc --version 2>/dev/null || echo unknown)" --commit "$COMMIT" \
  --minutes "$(( ($(date +%s) - T_START + 30) / 60 ))" --date "$DATE"
