#!/usr/bin/env bash
# Schemathesis over the API, as `./dev test` runs it (its `schemathesis` step): the debug
# `comet-api` and `comet-worker` over a fresh database and Redis prefix, then `st run` over
# /api/v1/openapi.json with every check, a fixed seed and a bounded number of examples, once
# with an all-permissions token, once with a user's token, and once with a platform operator's
# token over the routes it is for (projects, queues, schedules). Fails on any failure: a 5xx, an
# answer that breaks its documented schema, an undocumented status, a schema-valid request
# refused or a schema-violating one accepted, … The processes are stopped, the database dropped
# and the Redis keys deleted afterwards, whatever happened.
#
#   bash .ci/schemathesis.sh          (./dev test runs it after `cargo test`; ./dev deps
#                                      installs schemathesis into target/schemathesis-venv)
#
# Env knobs: ST_SEED (20261121), ST_MAX_EXAMPLES (50: per operation and phase), ST_TIMEOUT (480:
#   seconds per `st run` before it counts as failed), TEST_DATABASE_URL (the server the database
#   is made on), TEST_REDIS_URL, CARGO_TARGET_DIR (target). Reports, logs and the processes' output
#   are kept in $CARGO_TARGET_DIR/schemathesis/ (JUnit XML per caller).
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"

TARGET=$(readlink -f "${CARGO_TARGET_DIR:-target}")
VENV=$TARGET/schemathesis-venv
BIN=$TARGET/debug
OUT=$TARGET/schemathesis
SEED=${ST_SEED:-20261121}
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-50}
TIMEOUT=${ST_TIMEOUT:-480}
PG_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${TEST_REDIS_URL:-redis://127.0.0.1:6379}
MAX_DELAY_SECS=7776000

say() { printf '==> schemathesis: %s\n' "$*"; }
die() {
  printf 'schemathesis: %s\n' "$*" >&2
  exit 1
}

[[ -x $VENV/bin/st ]] || die "schemathesis is not installed in $VENV: run ./dev deps"
[[ -x $BIN/comet-api && -x $BIN/comet-worker ]] || die "no debug binaries in $BIN: cargo build first"
command -v psql >/dev/null || die "psql is needed to create the database (./dev deps installs it)"

# The database on TEST_DATABASE_URL's server, and a Redis prefix, both this run's own.
RUN_ID=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
DB=comet_schemathesis_$RUN_ID
PREFIX=schemathesis-$RUN_ID
pg_base=${PG_URL%%\?*}
pg_query=${PG_URL#"$pg_base"}
ADMIN_URL=${pg_base%/*}/postgres$pg_query
DB_URL=${pg_base%/*}/$DB$pg_query

rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d)
API_PID='' WORKER_PID='' ST_PID='' DB_MADE=''

# Stops both processes (SIGTERM, then SIGKILL after 10 s), drops the database, deletes the keys.
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in $ST_PID $API_PID $WORKER_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $ST_PID $API_PID $WORKER_PID; do
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n $DB_MADE ]]; then
    psql -qw "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 ||
      printf 'schemathesis: could not drop database %s\n' "$DB" >&2
  fi
  "$VENV/bin/python" "$ROOT/.ci/schemathesis_support.py" purge-redis "$REDIS" "$PREFIX" >/dev/null 2>&1 ||
    printf 'schemathesis: could not delete the Redis keys under %s:\n' "$PREFIX" >&2
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql -qw "$ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null
DB_MADE=1

# The processes run outside the repository, so no .env is read: this is their configuration.
export APP_ENV=development LOG_FORMAT=json RUST_LOG=info,sqlx=warn
export DATABASE_URL=$DB_URL REDIS_URL=$REDIS REDIS_PREFIX=$PREFIX
export JWT_SECRET
JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export PORT=0 WORKER_PORT=0 EMAIL_OUTBOX_DIR=$WORK/outbox SHUTDOWN_TIMEOUT_SECS=2
export JOB_MAX_DELAY_SECS=$MAX_DELAY_SECS
# webhook URLs become loopback ones (the hook): allowed, and no DNS needed
export WEBHOOK_ALLOW_PRIVATE=true
cd "$WORK"

"$BIN/comet-api" migrate >"$OUT/migrate.log" 2>&1 || die "migrate failed: $(tail -n 5 "$OUT/migrate.log")"
"$BIN/comet-api" seed >"$WORK/seed.txt" 2>"$OUT/seed.log" || die "seed failed: $(tail -n 5 "$OUT/seed.log")"
PROJECT=$(awk '/^demo project:/ {print $3}' "$WORK/seed.txt")
EMAIL=$(awk '/^  email:/ {print $2}' "$WORK/seed.txt")
PASSWORD=$(awk '/^  password:/ {print $2}' "$WORK/seed.txt")
[[ -n $PROJECT && -n $EMAIL && -n $PASSWORD ]] || die "unexpected seed output: $(cat "$WORK/seed.txt")"

"$BIN/comet-api" serve >"$OUT/api.log" 2>&1 &
API_PID=$!
"$BIN/comet-worker" >"$OUT/worker.log" 2>&1 &
WORKER_PID=$!

# PORT=0: the API logs the port it was given.
PORT=''
for ((i = 0; i < 300; i++)); do
  kill -0 "$API_PID" 2>/dev/null || die "the API exited: $(tail -n 5 "$OUT/api.log")"
  PORT=$(sed -n 's/.*"API listening".*"addr":"[^"]*:\([0-9]*\)".*/\1/p' "$OUT/api.log" | head -n1)
  [[ -n $PORT ]] && break
  sleep 0.1
done
[[ -n $PORT ]] || die "the API did not say which port it listens on: $(tail -n 5 "$OUT/api.log")"
BASE=http://127.0.0.1:$PORT

# Three callers: a token with every permission of the demo project (`*`), the seeded admin
# user's own token (logged in: its roles' permissions, and a user for the routes that need one),
# and a platform operator's token (the only kind that manages projects; bound to no project).
mint() { "$BIN/comet-api" token --project "$PROJECT" --permission '*' --sub schemathesis --ttl 1800; }
ALL_TOKEN=$(mint)
ALL_LOGOUT_TOKEN=$(mint)
PLATFORM_TOKEN=$("$BIN/comet-api" token --platform --sub schemathesis-platform --ttl 1800)
fixtures=$("$VENV/bin/python" "$ROOT/.ci/schemathesis_support.py" fixtures "$BASE" "$EMAIL" "$PASSWORD") ||
  die "could not set up the user's fixtures (API log: $OUT/api.log)"
eval "$fixtures"
export ST_HOOKS=$ROOT/.ci/schemathesis_hooks.py ST_MAX_DELAY_SECS=$MAX_DELAY_SECS
export ST_PROTECTED_USERS ST_ROLE_IDS ST_CURSOR ST_RULES_CURSOR ST_WEBHOOKS_CURSOR

# Every check runs (.ci/schemathesis.toml enables them all; its one exception, for one operation,
# says why).
run_st() {
  local caller=$1 token=$2 logout_token=$3 started=$SECONDS rc=0
  shift 3
  say "$caller: st run (all checks) --seed $SEED --max-examples $MAX_EXAMPLES"
  # in the background: a signal to this script then stops it at once (cleanup ends `st`)
  ST_TOKEN=$token ST_LOGOUT_TOKEN=$logout_token PYTHONHASHSEED=0 timeout "$TIMEOUT" \
    "$VENV/bin/st" --config-file "$ROOT/.ci/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
    --seed "$SEED" --max-examples "$MAX_EXAMPLES" --no-color "$@" \
    --report junit --report-junit-path "$OUT/$caller.junit.xml" \
    >"$OUT/$caller.txt" 2>&1 &
  ST_PID=$!
  wait "$ST_PID" || rc=$?
  ST_PID=
  sed -n '/^=* SUMMARY =*$/,$p' "$OUT/$caller.txt"
  if ((rc != 0)); then
    ((rc == 124)) && printf 'schemathesis: %s: timed out after %ss\n' "$caller" "$TIMEOUT" >&2
    sed -n '/^=* FAILURES =*$/,/^=* \(WARNINGS\|SUMMARY\) =*$/p' "$OUT/$caller.txt" | head -n 200
    printf 'schemathesis: %s FAILED (%ss); the whole output is in %s\n' "$caller" \
      "$((SECONDS - started))" "$OUT/$caller.txt" >&2
    return 1
  fi
  say "$caller: passed ($((SECONDS - started))s)"
}

failed=0
run_st all-permissions "$ALL_TOKEN" "$ALL_LOGOUT_TOKEN" || failed=1
run_st user "$ST_USER_TOKEN" "$ST_USER_LOGOUT_TOKEN" || failed=1
# last: it may suspend or delete the demo project the other callers use. Only the routes a
# platform token is for (the others answer it 403, or 404 for being bound to no project).
run_st platform "$PLATFORM_TOKEN" "$PLATFORM_TOKEN" \
  --include-path-regex '^/api/v1/(projects|queues|schedules)' || failed=1
if ! kill -0 "$API_PID" 2>/dev/null || ! kill -0 "$WORKER_PID" 2>/dev/null; then
  printf 'schemathesis: the API or the worker died during the run (logs in %s)\n' "$OUT" >&2
  failed=1
fi
exit "$failed"
