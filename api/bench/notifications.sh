#!/usr/bin/env bash
# The notifications benchmark (issue 10): real release `comet-api` (two processes) and
# `comet-worker` on a dedicated database and Redis prefix. Prints one table (Comet, the target)
# and records it in BENCHMARKS.md (between <!-- bench:notifications:start --> and
# <!-- bench:notifications:end -->).
#
#   bash api/bench/notifications.sh          (or BENCHES=notifications ./dev bench)
#
# Setup: a project made through the API (its first API key sends every event); USERS (200)
# ACTIVE users in NGROUPS (20) roles of USERS/NGROUPS (10) users each; per group k a rule on event
# type `bench.g<k>` (condition `true`, channel inApp) targeting its role, so an event makes one
# notification for 10 recipients; a rule on `hook.fired` (channel webhook) and ENDPOINTS (1)
# webhook endpoint(s) on `hook.*` to the driver's receiver on loopback. Every user gets a token
# (`comet-api token --sub <user id>`, as a login issues) and opens its stream through a ticket.
# Measures (see notifications_bench.py): API memory per open stream (MEM_STREAMS, 1000);
# event 202 -> `notification` on the SSE stream with 200 streams over two API processes, open
# loop at LOW_RATE (100) then RATE (1000) events/s for SECS (10) s each; webhook deliveries per
# second from one worker on a backlog of WH_N (20000) notifications. Before the live phases,
# HISTORY (20000) events of their types are processed and delivered (at most 180 s), then
# ANALYZE: the tables of a deployment that has been running, not a new, never-analyzed database.
#
# Env knobs: RATE LOW_RATE SECS DRAIN (60) USERS NGROUPS MEM_STREAMS WH_N ENDPOINTS HISTORY (above)
#   DB (comet_bench_notifications; dropped and recreated)  PG_URL (postgres://postgres@127.0.0.1:5432)
#   REDIS_URL (redis://127.0.0.1:6379)  PREFIX (bench-notif; its keys deleted before and after)
#   PORT_A (18101) PORT_B (18102) HOOK_PORT (18103)  MD (<repo>/BENCHMARKS.md; MD= leaves it alone)
#   BUILD (1; 0 = use the existing target/release binaries)
#   LOCK (/tmp/bench.lock; LOCK= disables)  QUIET_WAIT (300)   [the peers' lock and guard.py]
#   PERF (0; 1 = `perf record` the webhook-delivering worker into the raw results)
#   DRIVER (rust: the SSE clients and the event poster are `comet-bench sse` / `post`;
#     python: this folder's asyncio ones, as before 2026-12-06)
#   PG_QUERY (appended as ?PG_QUERY to the processes' DATABASE_URL, e.g. Postgres options)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

RATE=${RATE:-1000}
LOW_RATE=${LOW_RATE:-100}
SECS=${SECS:-10}
DRAIN=${DRAIN:-60}
USERS=${USERS:-200}
NGROUPS=${NGROUPS:-20}
MEM_STREAMS=${MEM_STREAMS:-1000}
WH_N=${WH_N:-20000}
HISTORY=${HISTORY:-20000}
ENDPOINTS=${ENDPOINTS:-1}
DRIVER=${DRIVER:-rust}
DB=${DB:-comet_bench_notifications}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PREFIX=${PREFIX:-bench-notif}
PORT_A=${PORT_A:-18101}
PORT_B=${PORT_B:-18102}
HOOK_PORT=${HOOK_PORT:-18103}
MD=${MD-$ROOT/BENCHMARKS.md}
LOCK=${LOCK-/tmp/bench.lock}
QUIET_WAIT=${QUIET_WAIT:-300}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench/notifications-$STAMP}
mkdir -p "$OUT"
[[ $DB =~ ^[A-Za-z0-9_]+$ ]] || { echo "bad DB name $DB" >&2; exit 1; }
(( USERS % NGROUPS == 0 )) || { echo "USERS must be a multiple of NGROUPS" >&2; exit 1; }

for tool in psql redis-cli python3 flock curl; do
  command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
read -r RHOST RPORT <<< "$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 6379)' "$REDIS_URL")"
redis-cli -h "$RHOST" -p "$RPORT" ping > /dev/null || { echo "Redis not reachable at $REDIS_URL" >&2; exit 1; }
psql -w "$PG_URL/postgres" -Atqc 'SELECT 1' > /dev/null || { echo "Postgres not reachable at $PG_URL" >&2; exit 1; }

if [ "${BUILD:-1}" = 1 ]; then
  echo "== building comet-api and comet-worker (release)" >&2
  cargo build --release --quiet -p comet-api -p comet-worker >&2
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
export APP_BASE_URL=http://bench.test EMAIL_OUTBOX_DIR=$WORK/outbox WEBHOOK_ALLOW_PRIVATE=true
# the limits are not what is measured here
export RATE_LIMIT_EVENTS_PER_PROJECT=100000000/60 JOB_MAX_OPEN_PER_PROJECT=100000000
export STREAM_MAX_PER_USER=$(( MEM_STREAMS / USERS + 2 ))

clean_redis() {
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del > /dev/null
}

api() { # METHOD PATH AUTH-HEADER BODY
  curl -fsS -X "$1" "http://127.0.0.1:$PORT_A$2" -H "$3" -H 'Content-Type: application/json' ${4:+-d "$4"}
}

# One measured run, under the peers' lock and noise guard; everything it needs is made inside.
measure() {
  cd "$WORK"
  psql -w "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" > /dev/null
  clean_redis
  "$BIN/comet-api" migrate > "$OUT/migrate.log" 2>&1
  local platform created project key token
  platform=$("$BIN/comet-api" token --platform)
  PORT=$PORT_A "$BIN/comet-api" serve > "$OUT/setup-api.log" 2>&1 &
  local setup_api=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT_A/health" > /dev/null && break; sleep 0.1; done
  created=$(api POST /api/v1/projects "Authorization: Bearer $platform" '{"name": "Notifications bench"}')
  project=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["project"]["id"])' <<< "$created")
  key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["apiKey"]["key"])' <<< "$created")
  token=$("$BIN/comet-api" token --project "$project" -p rule:write -p rule:read -p webhooks:manage)
  # NGROUPS roles bench-g<k>, USERS users, user i in role bench-g<i % NGROUPS>
  psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -q <<SQL
INSERT INTO roles (role_id, project_id, name)
SELECT gen_random_uuid(), '$project', 'bench-g' || g FROM generate_series(0, $NGROUPS - 1) g;
INSERT INTO users (user_id, project_id, email, name, status)
SELECT gen_random_uuid(), '$project', 'u' || i || '@bench.test', 'User ' || i, 'ACTIVE'
FROM generate_series(0, $USERS - 1) i;
INSERT INTO user_roles (project_id, user_id, role_id)
SELECT '$project', u.user_id, ro.role_id FROM users u
JOIN roles ro ON ro.project_id = u.project_id
 AND ro.name = 'bench-g' || (substring(u.email from '^u([0-9]+)@')::int % $NGROUPS)
WHERE u.project_id = '$project' AND u.email LIKE '%@bench.test';
SQL
  local g role
  for g in $(seq 0 $((NGROUPS - 1))); do
    role=$(psql -w "$DATABASE_URL" -Atqc "SELECT role_id FROM roles WHERE project_id = '$project' AND name = 'bench-g$g'")
    api POST /api/v1/rules "Authorization: Bearer $token" "{\"name\": \"group $g\", \"eventTypes\": [\"bench.g$g\"],
      \"condition\": \"true\", \"title\": \"{{ event.type }}\", \"body\": \"n = {{ event.payload.n }}\",
      \"targetRoleIds\": [\"$role\"], \"channels\": [\"inApp\"]}" > /dev/null
  done
  api POST /api/v1/rules "Authorization: Bearer $token" "{\"name\": \"hook\", \"eventTypes\": [\"hook.fired\"],
    \"condition\": \"true\", \"title\": \"{{ event.type }}\", \"body\": \"n = {{ event.payload.n }}\",
    \"targetRoleIds\": [\"$role\"], \"channels\": [\"webhook\"]}" > /dev/null
  for g in $(seq 1 "$ENDPOINTS"); do
    api POST /api/v1/webhook-endpoints "Authorization: Bearer $token" "{\"url\": \"http://127.0.0.1:$HOOK_PORT/hook/$g\",
      \"description\": \"bench receiver $g\", \"eventTypes\": [\"hook.*\"]}" > /dev/null
  done
  kill "$setup_api" && wait "$setup_api" || true
  # one token per user, as a login would issue it (subject = the user)
  psql -w "$DATABASE_URL" -Atqc "SELECT substring(email from '^u([0-9]+)@')::int, user_id FROM users
    WHERE project_id = '$project' AND email LIKE '%@bench.test' ORDER BY 1" -F ' ' |
  while read -r ix uid; do
    printf '{"ix": %d, "group": %d, "user": "%s", "token": "%s"}\n' "$ix" $((ix % NGROUPS)) "$uid" \
      "$("$BIN/comet-api" token --project "$project" --sub "$uid" -p user:read -p jobs:read -p events:read -p rule:read)"
  done > "$OUT/users.jsonl"
  python3 "$HERE/notifications_bench.py" --bin "$BIN" --logs "$OUT" --db "$DATABASE_URL" \
    --api-key "$key" --users "$OUT/users.jsonl" --port-a "$PORT_A" --port-b "$PORT_B" \
    --hook-port "$HOOK_PORT" --group $((USERS / NGROUPS)) --rate "$RATE" --low-rate "$LOW_RATE" \
    --secs "$SECS" --drain "$DRAIN" --mem-streams "$MEM_STREAMS" --wh-n "$WH_N" --history "$HISTORY" \
    --endpoints "$ENDPOINTS" --driver "$DRIVER" --out "$OUT/driver.json" 2> "$OUT/driver.err" || { tail -n 30 "$OUT/driver.err" >&2; return 1; }
  clean_redis
}

echo "== notifications bench: ${USERS} streams, ${LOW_RATE} then ${RATE} events/s x ${SECS}s, webhook backlog $WH_N; raw results in $OUT" >&2
T_START=$(date +%s)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
export -f measure clean_redis api
export HERE OUT WORK BIN PG_URL DB PORT_A PORT_B HOOK_PORT PREFIX RHOST RPORT RATE LOW_RATE SECS DRAIN
export USERS NGROUPS MEM_STREAMS WH_N ENDPOINTS HISTORY DRIVER
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

CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal/{printf "%.1f", $2 / 1048576}' /proc/meminfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT+dirty"
python3 "$HERE/notifications_table.py" --driver "$OUT/driver.json" --md "$MD" --date "$DATE" \
  --commit "$COMMIT" --foreign "$FOREIGN" --load "before $LOAD_BEFORE, after $LOAD_AFTER (1/5/15 min)" \
  --minutes "$(( ($(date +%s) - T_START + 30) / 60 ))" \
  --env "RATE=$RATE LOW_RATE=$LOW_RATE SECS=$SECS USERS=$USERS NGROUPS=$NGROUPS MEM_STREAMS=$MEM_STREAMS WH_N=$WH_N ENDPOINTS=$ENDPOINTS HISTORY=$HISTORY" \
  --machine "$(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB RAM, $(uname -sr)" \
  --versions "$(psql -w "$PG_URL/postgres" -Atqc 'SHOW server_version' | cut -d' ' -f1) / $(redis-cli -h "$RHOST" -p "$RPORT" INFO server | awk -F: '/^redis_version/{print $2}' | tr -d '\r') / $(rustc --version | cut -d' ' -f1-2)"
