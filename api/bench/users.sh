#!/usr/bin/env bash
# The user-management benchmark: real release `comet-api` (two processes) and `comet-worker`, a
# real SMTP sink on loopback, a dedicated database and Redis prefix. Prints one table and records
# it in BENCHMARKS.md (between <!-- bench:users:start --> and <!-- bench:users:end -->).
#
#   bash api/bench/users.sh          (or ./dev bench, which runs the queue benchmark first;
#                                     BENCHES=users ./dev bench runs only this one)
#
# Measures:
#   1. invites end to end: N invites by the seeded admin (POST /api/v1/users/invite, CONC in
#      flight), from the first request to the N-th email accepted by the SMTP sink; request p50/p99
#   2. deactivation -> first refused: REPEATS times, a user logged in (invite, accept, login) is
#      deactivated on API A while a poller sends GET /api/v1/users/me with its token to API B;
#      time from A's answer to B's first 401
#   3. GET /api/v1/users (first page) with USERS (10,000) users in the project, open loop at
#      LIST_RATE (2000) req/s for LIST_SECS (20) s with oha (latency-corrected), p50/p95/p99, errors
#   4. the same for the last page, for LIST_SECS/2 s each: by page number (the deepest OFFSET)
#      and by cursor (`after`, keyset)
#   5. GET /api/v1/roles (every role with its permissions and user count, over the same USERS
#      users) at ROLES_RATE (2000) req/s for ROLES_SECS (LIST_SECS/2) s with oha: p50/p99, errors
#   6. logins (Argon2id dominates): LOGIN_SEQ logins one at a time (each is one Argon2id
#      verification: its p50 is the hash time plus a round trip), then a closed-loop flood of
#      LOGIN_CONNS logins in flight for LOGIN_SECS s (req/s sustained, p50/p99, how many were
#      refused 503 `busy` by the Argon2 gate: one computation per core, 2 s wait), while
#      GET /api/v1/users/me runs at ME_RATE req/s on the same API: its p99 during the flood,
#      against the same load without the flood (a login flood must not starve other routes)
#
# Env knobs: N (500) CONC (16) REPEATS (20) USERS (10000) LIST_RATE (2000) LIST_SECS (20)
#   ROLES_RATE (2000) ROLES_SECS (LIST_SECS/2)
#   LOGIN_SEQ (20) LOGIN_CONNS (32) LOGIN_SECS (15) ME_RATE (200)
#   LIST_CONNS (64: oha connections)  DB (comet_bench_users; dropped and recreated)
#   PG_URL (postgres://postgres@127.0.0.1:5432)  REDIS_URL (redis://127.0.0.1:6379)
#   PREFIX (bench-users: Redis key prefix; its keys are deleted before and after)
#   PORT_A (18081) PORT_B (18082)  MD (<repo>/BENCHMARKS.md; MD= leaves it alone)
#   BIN_DIR (target/$PROFILE; another build's binaries with BUILD=0)
#   BUILD (1; 0 = use the existing binaries)  PROFILE (release; `debug` for a quick look: its
#   figures are not comparable, dependencies are built at opt-level 1)  OHA (oha on PATH or ~/.cargo/bin;
#   installed with `cargo install oha --locked` when missing)
#   LOCK (/tmp/bench.lock; LOCK= disables)  QUIET_WAIT (300)   [the peers' lock and guard.py]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

N=${N:-500}
CONC=${CONC:-16}
REPEATS=${REPEATS:-20}
USERS=${USERS:-10000}
LIST_RATE=${LIST_RATE:-2000}
LIST_SECS=${LIST_SECS:-20}
LIST_CONNS=${LIST_CONNS:-64}
ROLES_RATE=${ROLES_RATE:-2000}
ROLES_SECS=${ROLES_SECS:-$(( (LIST_SECS + 1) / 2 ))}
LOGIN_SEQ=${LOGIN_SEQ:-20}
LOGIN_CONNS=${LOGIN_CONNS:-32}
LOGIN_SECS=${LOGIN_SECS:-15}
ME_RATE=${ME_RATE:-200}
DB=${DB:-comet_bench_users}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PREFIX=${PREFIX:-bench-users}
PORT_A=${PORT_A:-18081}
PORT_B=${PORT_B:-18082}
MD=${MD-$ROOT/BENCHMARKS.md}
LOCK=${LOCK-/tmp/bench.lock}
QUIET_WAIT=${QUIET_WAIT:-300}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/target/bench/users-$STAMP}
mkdir -p "$OUT"
[[ $DB =~ ^[A-Za-z0-9_]+$ ]] || { echo "bad DB name $DB" >&2; exit 1; }

for tool in psql redis-cli python3 flock curl; do
  command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
REDIS_HOST=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 6379)' "$REDIS_URL")
read -r RHOST RPORT <<< "$REDIS_HOST"
redis-cli -h "$RHOST" -p "$RPORT" ping > /dev/null || { echo "Redis not reachable at $REDIS_URL" >&2; exit 1; }
psql -w "$PG_URL/postgres" -Atqc 'SELECT 1' > /dev/null || { echo "Postgres not reachable at $PG_URL" >&2; exit 1; }

PROFILE=${PROFILE:-release}
if [ "${BUILD:-1}" = 1 ]; then
  echo "== building comet-api and comet-worker ($PROFILE)" >&2
  if [ "$PROFILE" = release ]; then
    cargo build --release --quiet -p comet-api -p comet-worker >&2
  else
    cargo build --quiet --bin comet-api --bin comet-worker >&2
  fi
fi
BIN=${BIN_DIR:-$ROOT/target/$PROFILE}
[ -x "$BIN/comet-api" ] && [ -x "$BIN/comet-worker" ] || { echo "no release binaries in $BIN" >&2; exit 1; }
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
if [ ! -x "$OHA" ]; then
  echo "== installing oha (cargo install oha --locked; a few minutes, once)" >&2
  cargo install oha --locked >&2
  OHA=$HOME/.cargo/bin/oha
fi

# The processes run outside the repository so that no .env is read: the configuration is this.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export APP_ENV=development LOG_FORMAT=json
export DATABASE_URL=$PG_URL/$DB REDIS_URL REDIS_PREFIX=$PREFIX
export JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export ALLOWED_INVITE_DOMAINS='' APP_BASE_URL=http://bench.test EMAIL_OUTBOX_DIR=$WORK/outbox
export RATE_LIMIT_INVITE_PER_USER=1000000/3600 RATE_LIMIT_INVITE_PER_PROJECT=1000000/3600
# invitations count against the enqueue rate too (the quota of open jobs stays the default)
export RATE_LIMIT_ENQUEUE_PER_PROJECT=1000000/60
export RATE_LIMIT_LOGIN_PER_IP=1000000/60 RATE_LIMIT_LOGIN_PER_EMAIL=1000/300

clean_redis() {
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del > /dev/null
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "{$PREFIX}*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del > /dev/null
}

# One measured run, under the peers' lock and noise guard (guard.py does not count Postgres and
# Redis as foreign); everything it needs is created inside it.
measure() {
  cd "$WORK"
  psql -w "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" > /dev/null
  clean_redis
  "$BIN/comet-api" migrate > "$OUT/migrate.log" 2>&1
  "$BIN/comet-api" seed > "$WORK/seed.txt" 2> "$OUT/seed.log"
  local password project member
  password=$(awk '/^  password:/{print $2}' "$WORK/seed.txt")
  project=$(awk '/^demo project:/{print $3}' "$WORK/seed.txt")
  member=$(psql -w "$DATABASE_URL" -Atqc "SELECT role_id FROM roles WHERE project_id = '$project' AND name = 'member'")
  rm -f "$WORK/hold"
  BENCH_MEMBER_ROLE=$member python3 "$HERE/users_bench.py" --bin "$BIN" --logs "$OUT" \
    --port-a "$PORT_A" --port-b "$PORT_B" --admin-password "$password" \
    --n "$N" --conc "$CONC" --repeats "$REPEATS" --out "$OUT/driver.json" \
    --token-out "$WORK/admin.token" --hold "$WORK/hold" 2> "$OUT/driver.err" &
  local driver=$!
  until grep -qs READY "$OUT/driver.err"; do
    kill -0 "$driver" 2> /dev/null || { cat "$OUT/driver.err" >&2; return 1; }
    sleep 0.2
  done
  # 3. USERS more users in the project: 70 % ACTIVE, 20 % INVITED, 10 % DEACTIVATED, each with
  # the member role (every 50th also admin), created over the last USERS seconds.
  psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -q <<SQL
INSERT INTO users (user_id, project_id, email, name, status, created_at)
SELECT gen_random_uuid(), '$project', 'seed-' || g || '@bench.test', 'Seed user ' || g,
       CASE WHEN g % 10 < 7 THEN 'ACTIVE' WHEN g % 10 < 9 THEN 'INVITED' ELSE 'DEACTIVATED' END,
       now() - make_interval(secs => $USERS - g + 3600)
FROM generate_series(1, $USERS) g;
INSERT INTO user_roles (project_id, user_id, role_id)
SELECT u.project_id, u.user_id, '$member' FROM users u WHERE u.email LIKE 'seed-%';
INSERT INTO user_roles (project_id, user_id, role_id)
SELECT u.project_id, u.user_id, r.role_id FROM users u JOIN roles r ON r.project_id = u.project_id
WHERE u.email LIKE 'seed-%' AND r.name = 'admin' AND split_part(substr(u.email, 6), '@', 1)::int % 50 = 0;
ANALYZE users; ANALYZE user_roles;
SQL
  psql -w "$DATABASE_URL" -Atqc "SELECT count(*) FROM users WHERE project_id = '$project'" > "$OUT/users.count"
  local url="http://127.0.0.1:$PORT_A/api/v1/users" auth
  auth="Authorization: Bearer $(cat "$WORK/admin.token")"
  "$OHA" -n 2000 -c 16 --no-tui -H "$auth" "$url" > /dev/null # warm-up
  "$OHA" -z "${LIST_SECS}s" -q "$LIST_RATE" -c "$LIST_CONNS" --latency-correction --no-tui \
    --output-format json -H "$auth" "$url" > "$OUT/oha.json"
  # 4. the last page, at the same rate for half as long: by page number (OFFSET past every
  # other user), then by cursor (the previous page's meta.nextCursor: keyset)
  local last cursor
  last=$(( ($(cat "$OUT/users.count") + 19) / 20 ))
  "$OHA" -z "$(( (LIST_SECS + 1) / 2 ))s" -q "$LIST_RATE" -c "$LIST_CONNS" --latency-correction --no-tui \
    --output-format json -H "$auth" "$url?page=$last&perPage=20" > "$OUT/oha-last.json"
  cursor=$(curl -fsS -H "$auth" "$url?page=$(( last - 1 ))&perPage=20" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["meta"]["nextCursor"])')
  "$OHA" -z "$(( (LIST_SECS + 1) / 2 ))s" -q "$LIST_RATE" -c "$LIST_CONNS" --latency-correction --no-tui \
    --output-format json -H "$auth" "$url?after=$cursor&perPage=20" > "$OUT/oha-cursor.json"
  # 5. the role list (each role's permissions and holder count, over the same users)
  local roles="http://127.0.0.1:$PORT_A/api/v1/roles"
  "$OHA" -n 2000 -c 16 --no-tui -H "$auth" "$roles" > /dev/null # warm-up
  "$OHA" -z "${ROLES_SECS}s" -q "$ROLES_RATE" -c "$LIST_CONNS" --latency-correction --no-tui \
    --output-format json -H "$auth" "$roles" > "$OUT/oha-roles.json"
  # 5. logins: one at a time (the Argon2id time), then a flood with GET /users/me beside it
  local login_url="http://127.0.0.1:$PORT_A/api/v1/auth/login" me_url="http://127.0.0.1:$PORT_A/api/v1/users/me"
  local login_body="{\"email\":\"admin@comet.local\",\"password\":\"$password\"}"
  "$OHA" -n "$LOGIN_SEQ" -c 1 --no-tui --output-format json -m POST -T application/json \
    -d "$login_body" "$login_url" > "$OUT/oha-login-seq.json"
  "$OHA" -z "${LOGIN_SECS}s" -q "$ME_RATE" -c 8 --latency-correction --no-tui --output-format json \
    -H "$auth" "$me_url" > "$OUT/oha-me-idle.json"
  "$OHA" -z "${LOGIN_SECS}s" -q "$ME_RATE" -c 8 --latency-correction --no-tui --output-format json \
    -H "$auth" "$me_url" > "$OUT/oha-me-flood.json" &
  local me_pid=$!
  "$OHA" -z "${LOGIN_SECS}s" -c "$LOGIN_CONNS" --no-tui --output-format json -m POST -T application/json \
    -d "$login_body" "$login_url" > "$OUT/oha-login.json"
  wait "$me_pid"
  touch "$WORK/hold"
  wait "$driver"
  clean_redis
}

echo "== users bench: N=$N CONC=$CONC REPEATS=$REPEATS USERS=$USERS LIST=${LIST_RATE}/s x ${LIST_SECS}s; raw results in $OUT" >&2
T_START=$(date +%s)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
export -f measure clean_redis
export HERE OUT WORK BIN OHA PG_URL DB N CONC REPEATS USERS LIST_RATE LIST_SECS LIST_CONNS ROLES_RATE ROLES_SECS PORT_A PORT_B PREFIX RHOST RPORT
export LOGIN_SEQ LOGIN_CONNS LOGIN_SECS ME_RATE
GUARD=()
for p in "$ROOT/../shared/bench/peers" /work/shared/bench/peers; do
  if [ -f "$p/guard.py" ]; then GUARD=(python3 "$p/guard.py" --quiet-wait "$QUIET_WAIT" --report "$OUT/guard.json" --); break; fi
done
if [ -n "$LOCK" ]; then
  flock "$LOCK" "${GUARD[@]}" bash -c "set -euo pipefail; measure"
else
  "${GUARD[@]}" bash -c "set -euo pipefail; measure"
fi
FOREIGN=null
[ -f "$OUT/guard.json" ] && FOREIGN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["foreign_cpu"])' "$OUT/guard.json")

CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal/{printf "%.1f", $2 / 1048576}' /proc/meminfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT+dirty"
python3 "$HERE/users_table.py" --driver "$OUT/driver.json" --oha "$OUT/oha.json" --oha-last "$OUT/oha-last.json" --oha-cursor "$OUT/oha-cursor.json" \
  --oha-roles "$OUT/oha-roles.json" \
  --login-seq "$OUT/oha-login-seq.json" --login "$OUT/oha-login.json" --me-idle "$OUT/oha-me-idle.json" --me-flood "$OUT/oha-me-flood.json" \
  --users "$(cat "$OUT/users.count")" --md "$MD" --date "$DATE" --commit "$COMMIT" \
  --foreign "$FOREIGN" --minutes "$(( ($(date +%s) - T_START + 30) / 60 ))" \
  --env "N=$N CONC=$CONC REPEATS=$REPEATS USERS=$USERS LIST_RATE=$LIST_RATE LIST_SECS=$LIST_SECS LIST_CONNS=$LIST_CONNS ROLES_RATE=$ROLES_RATE ROLES_SECS=$ROLES_SECS LOGIN_CONNS=$LOGIN_CONNS LOGIN_SECS=$LOGIN_SECS ME_RATE=$ME_RATE" \
  --machine "$(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB RAM, $(uname -sr)" \
  --versions "$(psql -w "$PG_URL/postgres" -Atqc 'SHOW server_version' | cut -d' ' -f1) / $(redis-cli -h "$RHOST" -p "$RPORT" INFO server | awk -F: '/^redis_version/{print $2}' | tr -d '\r') / $("$OHA" --version | head -n1) / $(rustc --version | cut -d' ' -f1-2)"
