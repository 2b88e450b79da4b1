#!/usr/bin/env bash
# The events and rules benchmark (issue 9): real release `comet-api` and `comet-worker` on a
# dedicated database and Redis prefix. Prints one table (Comet, the target, the nearest peer
# figure) and records it in BENCHMARKS.md (between <!-- bench:events:start --> and
# <!-- bench:events:end -->).
#
#   bash api/bench/events.sh          (or BENCHES=events ./dev bench)
#
# Setup: a project made through the API (its first API key sends every event), 20 active rules
# on the event's type, 2 of which match each event, each matching rule targeting its own role
# of 5 ACTIVE users (so 2 notifications and 10 recipient rows per event); the other 18 target a
# role of 5 other users. Measures (see events_bench.py):
#   1. single ingest (POST /api/v1/events, X-API-Key) open loop at SINGLE_RATE (2000) req/s for
#      SINGLE_SECS (10) s: p50/p99 from each request's due time (queueing included), sent by
#      `comet-bench http` (its per-request series in single-series.txt)
#   2. batch ingest: BATCH_N (50,000) events in batches of 1000, BATCH_CONC (2) in flight
#   3. process_event: one worker drains the backlog of 1 and 2: events/s over PROC_SECS (20) s
#   4. ingest answer -> notification rows: LAT_RATE (100) ev/s for LAT_SECS (10) s, p50/p99
# The peer column: graphile-worker (PostgreSQL job queue), run in the same invocation (PEER=1,
# the default; its bulk enqueue and enqueue->start latency), or its reference figures from
# ../shared/bench/peers/results/graphile.jsonl with PEER=0.
#
# Env knobs: SINGLE_RATE SINGLE_SECS BATCH_N BATCH_CONC PROC_SECS LAT_RATE LAT_SECS (above)
#   DB (comet_bench_events; dropped and recreated)  PG_URL (postgres://postgres@127.0.0.1:5432)
#   REDIS_URL (redis://127.0.0.1:6379)  PREFIX (bench-events; its keys deleted before and after)
#   PORT (18091)  MD (<repo>/BENCHMARKS.md; MD= leaves it alone)  PEER (1)
#   INGEST_WORKER (0; 1 = the worker, and so the relay, runs during the ingest phases too)
#   DRIVER (rust: `comet-bench http` sends the single events; python: events_bench.py's asyncio loop)
#   PG_QUERY (appended as ?PG_QUERY to the processes' DATABASE_URL, e.g. Postgres options)
#   BUILD (1; 0 = use the existing target/release binaries)
#   LOCK (/tmp/bench.lock; LOCK= disables)  QUIET_WAIT (300)   [the peers' lock and guard.py]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

SINGLE_RATE=${SINGLE_RATE:-2000}
SINGLE_SECS=${SINGLE_SECS:-10}
BATCH_N=${BATCH_N:-50000}
BATCH_CONC=${BATCH_CONC:-2}
PROC_SECS=${PROC_SECS:-20}
LAT_RATE=${LAT_RATE:-100}
LAT_SECS=${LAT_SECS:-10}
DB=${DB:-comet_bench_events}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PREFIX=${PREFIX:-bench-events}
PORT=${PORT:-18091}
PEER=${PEER:-1}
MD=${MD-$ROOT/BENCHMARKS.md}
LOCK=${LOCK-/tmp/bench.lock}
QUIET_WAIT=${QUIET_WAIT:-300}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench/events-$STAMP}
mkdir -p "$OUT"
[[ $DB =~ ^[A-Za-z0-9_]+$ ]] || { echo "bad DB name $DB" >&2; exit 1; }

for tool in psql redis-cli python3 flock curl; do
  command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
read -r RHOST RPORT <<< "$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 6379)' "$REDIS_URL")"
redis-cli -h "$RHOST" -p "$RPORT" ping > /dev/null || { echo "Redis not reachable at $REDIS_URL" >&2; exit 1; }
psql -w "$PG_URL/postgres" -Atqc 'SELECT 1' > /dev/null || { echo "Postgres not reachable at $PG_URL" >&2; exit 1; }

if [ "${BUILD:-1}" = 1 ]; then
  echo "== building comet-api and comet-worker (release)" >&2
  cargo build --release --quiet -p comet-api -p comet-worker --bin comet-api --bin comet-worker --bin comet-bench >&2
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
[ -x "$BIN/comet-api" ] && [ -x "$BIN/comet-worker" ] && [ -x "$BIN/comet-bench" ] || { echo "no release binaries in $BIN" >&2; exit 1; }

PEERS=$ROOT/../shared/bench/peers
[ -f "$PEERS/guard.py" ] || PEERS=/work/shared/bench/peers

# The processes run outside the repository so that no .env is read: the configuration is this.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export APP_ENV=development LOG_FORMAT=json RUST_LOG=warn
export DATABASE_URL=$PG_URL/$DB${PG_QUERY:+?$PG_QUERY} REDIS_URL REDIS_PREFIX=$PREFIX
export JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export APP_BASE_URL=http://bench.test EMAIL_OUTBOX_DIR=$WORK/outbox
# the limits are not what is measured here
export RATE_LIMIT_EVENTS_PER_PROJECT=100000000/60 JOB_MAX_OPEN_PER_PROJECT=100000000

clean_redis() {
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del > /dev/null
}

# One measured run, under the peers' lock and noise guard; everything it needs is made inside.
measure() {
  cd "$WORK"
  psql -w "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" > /dev/null
  clean_redis
  "$BIN/comet-api" migrate > "$OUT/migrate.log" 2>&1
  local platform created project key token
  platform=$("$BIN/comet-api" token --platform)
  PORT=$PORT "$BIN/comet-api" serve > "$OUT/setup-api.log" 2>&1 &
  local setup_api=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 0.1; done
  created=$(curl -fsS -X POST "http://127.0.0.1:$PORT/api/v1/projects" -H "Authorization: Bearer $platform" \
    -H 'Content-Type: application/json' -d '{"name": "Events bench"}')
  project=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["project"]["id"])' <<< "$created")
  key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["apiKey"]["key"])' <<< "$created")
  token=$("$BIN/comet-api" token --project "$project" -p rule:write -p rule:read)
  # 3 roles of 5 ACTIVE users each: r1 and r2 for the two matching rules, r0 for the others
  psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -q <<SQL
INSERT INTO roles (role_id, project_id, name)
SELECT gen_random_uuid(), '$project', 'bench-r' || r FROM generate_series(0, 2) r;
INSERT INTO users (user_id, project_id, email, name, status)
SELECT gen_random_uuid(), '$project', 'u' || r || '-' || g || '@bench.test', 'User ' || g, 'ACTIVE'
FROM generate_series(0, 2) r, generate_series(1, 5) g;
INSERT INTO user_roles (project_id, user_id, role_id)
SELECT '$project', u.user_id, ro.role_id FROM users u
JOIN roles ro ON ro.project_id = u.project_id AND ro.name = 'bench-r' || split_part(substr(u.email, 2), '-', 1)
WHERE u.project_id = '$project' AND u.email LIKE '%@bench.test';
SQL
  local r0 r1 r2 i cond role
  r0=$(psql -w "$DATABASE_URL" -Atqc "SELECT role_id FROM roles WHERE project_id = '$project' AND name = 'bench-r0'")
  r1=$(psql -w "$DATABASE_URL" -Atqc "SELECT role_id FROM roles WHERE project_id = '$project' AND name = 'bench-r1'")
  r2=$(psql -w "$DATABASE_URL" -Atqc "SELECT role_id FROM roles WHERE project_id = '$project' AND name = 'bench-r2'")
  for i in $(seq 0 19); do
    case $i in
      0) cond='event.payload.amount > 1000 && event.payload.currency == \"EUR\"' role=$r1 ;;
      1) cond='event.source == \"bench\" && event.payload.attempt >= 2' role=$r2 ;;
      *) cond="event.payload.amount > $((100000 * i)) || event.payload.currency == \\\"X$i\\\"" role=$r0 ;;
    esac
    curl -fsS -o /dev/null -X POST "http://127.0.0.1:$PORT/api/v1/rules" -H "Authorization: Bearer $token" \
      -H 'Content-Type: application/json' -d "{\"name\": \"rule $i\", \"eventTypes\": [\"transfer.*\"],
        \"condition\": \"$cond\", \"title\": \"{{ event.type }}: {{ event.payload.amount }}\",
        \"body\": \"Account {{ event.payload.account }} ({{ event.payload.currency }})\",
        \"targetRoleIds\": [\"$role\"], \"channels\": [\"inApp\"], \"priority\": $i}"
  done
  kill "$setup_api" && wait "$setup_api" || true
  python3 "$HERE/events_bench.py" --bin "$BIN" --logs "$OUT" --port "$PORT" --db "$DATABASE_URL" \
    --project "$project" --api-key "$key" --single-rate "$SINGLE_RATE" --single-secs "$SINGLE_SECS" \
    --batch-n "$BATCH_N" --batch-conc "$BATCH_CONC" --proc-secs "$PROC_SECS" \
    --lat-rate "$LAT_RATE" --lat-secs "$LAT_SECS" --ingest-worker "${INGEST_WORKER:-0}" \
    --driver "${DRIVER:-rust}" \
    --clean "redis-cli -h $RHOST -p $RPORT --scan --pattern '$PREFIX:*' | xargs -r -n 500 redis-cli -h $RHOST -p $RPORT del > /dev/null" \
    --out "$OUT/driver.json" 2> "$OUT/driver.err" || { tail -n 30 "$OUT/driver.err" >&2; return 1; }
  clean_redis
}

echo "== events bench: single ${SINGLE_RATE}/s x ${SINGLE_SECS}s, batch $BATCH_N x$BATCH_CONC, process ${PROC_SECS}s, latency ${LAT_RATE}/s x ${LAT_SECS}s; raw results in $OUT" >&2
T_START=$(date +%s)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
export -f measure clean_redis
export INGEST_WORKER=${INGEST_WORKER:-0}
export HERE OUT WORK BIN PG_URL DB PORT PREFIX RHOST RPORT SINGLE_RATE SINGLE_SECS BATCH_N BATCH_CONC PROC_SECS LAT_RATE LAT_SECS
GUARD=()
[ -f "$PEERS/guard.py" ] && GUARD=(python3 "$PEERS/guard.py" --quiet-wait "$QUIET_WAIT" --report "$OUT/guard.json" --)
if [ -n "$LOCK" ]; then
  flock "$LOCK" "${GUARD[@]}" bash -c "set -euo pipefail; measure"
else
  "${GUARD[@]}" bash -c "set -euo pipefail; measure"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
FOREIGN=null
[ -f "$OUT/guard.json" ] && FOREIGN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["foreign_cpu"])' "$OUT/guard.json")

# The peer: graphile-worker's bulk enqueue and latency, run now from a copy under target/.
PEER_RESULTS=$PEERS/results/graphile.jsonl
PEER_SOURCE="reference run ($PEER_RESULTS)"
if [ "$PEER" = 1 ] && command -v node > /dev/null; then
  PW=${CARGO_TARGET_DIR:-$ROOT/target}/bench/peers
  mkdir -p "$PW/pg"
  cp "$PEERS/lib.sh" "$PEERS/guard.py" "$PW/"
  sed -i 's|guard.py" --report|guard.py" --quiet-wait "$QUIET_WAIT" --report|' "$PW/lib.sh"
  for f in run.sh graphile_bench.js package.json package-lock.json; do
    cmp -s "$PEERS/pg/$f" "$PW/pg/$f" || cp "$PEERS/pg/$f" "$PW/pg/$f"
  done
  echo "== graphile-worker (enqueue, latency)" >&2
  if QUIET_WAIT=$QUIET_WAIT DATABASE_URL=$PG_URL/postgres RUNS=1 PARTS="enqueue latency" \
    RESULTS=$OUT/graphile.jsonl bash "$PW/pg/run.sh" >&2; then
    PEER_RESULTS=$OUT/graphile.jsonl
    PEER_SOURCE="this invocation"
  else
    echo "note: graphile-worker failed; using its reference figures" >&2
  fi
fi

CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal/{printf "%.1f", $2 / 1048576}' /proc/meminfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT+dirty"
python3 "$HERE/events_table.py" --driver "$OUT/driver.json" --peer "$PEER_RESULTS" --peer-source "$PEER_SOURCE" \
  --md "$MD" --date "$DATE" --commit "$COMMIT" --foreign "$FOREIGN" \
  --load "before $LOAD_BEFORE, after $LOAD_AFTER (1/5/15 min)" \
  --minutes "$(( ($(date +%s) - T_START + 30) / 60 ))" \
  --env "SINGLE_RATE=$SINGLE_RATE SINGLE_SECS=$SINGLE_SECS BATCH_N=$BATCH_N BATCH_CONC=$BATCH_CONC PROC_SECS=$PROC_SECS LAT_RATE=$LAT_RATE LAT_SECS=$LAT_SECS" \
  --machine "$(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB RAM, $(uname -sr)" \
  --versions "$(psql -w "$PG_URL/postgres" -Atqc 'SHOW server_version' | cut -d' ' -f1) / $(redis-cli -h "$RHOST" -p "$RPORT" INFO server | awk -F: '/^redis_version/{print $2}' | tr -d '\r') / $(rustc --version | cut -d' ' -f1-2)"
