#!/usr/bin/env bash
# The job search benchmark (issue 14): real release `comet-api` and `comet-worker` on a dedicated
# database and Redis prefix. Prints one table (Comet, the target, the peers) and records it in
# BENCHMARKS.md (between <!-- bench:job_search:start --> and <!-- bench:job_search:end -->).
#
#   bash api/bench/job_search.sh          (or BENCHES=job_search ./dev bench)
#
# None of the peers in ../shared/bench/peers (BullMQ, Celery, graphile-worker) has a search over
# finished jobs: graphile-worker deletes a job once it completes, BullMQ keeps finished jobs in
# per-queue Redis lists without text search, Celery's result backend is a key-value store. So
# the table has Comet's figures and the issue's targets only. Phases, in one database:
#   0. setup: PROJECTS (20) projects made through the API, a token per project (jobs:read,
#      jobs:write) and a platform operator's (queues:read, jobs:read)
#   1. seed: ROWS (1,000,000) finished jobs written into job_archive by one SQL statement
#      (generate_series): 8 queues, the 20 projects, finished_at spread over the last 24 h,
#      UUIDv7 ids from the creation time, small JSON payloads and results; DEAD (10,000) dead
#      jobs with errors from 50 templates whose ids / numbers / addresses vary (made by
#      job_search_bench.py `dead`, fingerprints by its port of shared/src/queue/fingerprint.rs,
#      so the failure groups are what the archiver would write), ROWS/1000 cancelled, 1 % of the
#      completed ones with the error of an earlier attempt, the rest completed; then
#      VACUUM ANALYZE (what autovacuum does to an insert-only table)
#   2. latency: one API process; one keep-alive client sends, per case, WARMUP (20) untimed then
#      REQS (200) timed requests one after another (send → last body byte, HTTP included):
#      error-text searches of 4 rarities as the platform operator and as a project, state pages
#      (first, 100th through the cursor, per state, per queue, no filter), failure groups
#   3. archiver: ARCHIVE_N (200,000) pings enqueued through POST /api/v1/jobs/ping (the worker
#      stopped; rate limits raised for the bench), then a worker (WORKER_QUEUES=ping) started:
#      job_archive's ping rows, the Redis archive backlog and the worker's
#      comet_archive_backlog gauge sampled every 0.25 s until all are archived
#
# Env knobs: ROWS (1000000) DEAD (10000) PROJECTS (20) REQS (200) WARMUP (20)
#   ARCHIVE_N (200000; 0 skips phase 3) ENQ_PROCS (4)
#   DB (comet_bench_job_search; dropped and recreated)  PG_URL (postgres://postgres@127.0.0.1:5432)
#   REDIS_URL (redis://127.0.0.1:6379)  PREFIX (bench-jobsearch; its keys deleted before and after)
#   PORT (18111) WPORT (18112, the worker's metrics)  MD (<repo>/BENCHMARKS.md; MD= leaves it alone)
#   BUILD (1; 0 = use the binaries as they are)  KEEP (0; 1 keeps the database afterwards)
#   LOCK (/tmp/bench.lock; LOCK= disables)  QUIET_WAIT (300)   [the peers' lock and guard.py]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

ROWS=${ROWS:-1000000}
DEAD=${DEAD:-10000}
PROJECTS=${PROJECTS:-20}
REQS=${REQS:-200}
WARMUP=${WARMUP:-20}
ARCHIVE_N=${ARCHIVE_N:-200000}
ENQ_PROCS=${ENQ_PROCS:-4}
DB=${DB:-comet_bench_job_search}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PREFIX=${PREFIX:-bench-jobsearch}
PORT=${PORT:-18111}
WPORT=${WPORT:-18112}
MD=${MD-$ROOT/BENCHMARKS.md}
LOCK=${LOCK-/tmp/bench.lock}
QUIET_WAIT=${QUIET_WAIT:-300}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench/job_search-$STAMP}
mkdir -p "$OUT"
[[ $DB =~ ^[A-Za-z0-9_]+$ ]] || { echo "bad DB name $DB" >&2; exit 1; }
for n in "$ROWS" "$DEAD" "$PROJECTS" "$REQS" "$WARMUP" "$ENQ_PROCS"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bad number $n" >&2; exit 1; }
done
[[ $ARCHIVE_N =~ ^[0-9]+$ ]] || { echo "bad number $ARCHIVE_N" >&2; exit 1; }
(( DEAD * 100 <= ROWS )) || { echo "DEAD must be at most ROWS/100" >&2; exit 1; }

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
[ -x "$BIN/comet-api" ] && [ -x "$BIN/comet-worker" ] || { echo "no release binaries in $BIN" >&2; exit 1; }

PEERS=$ROOT/../shared/bench/peers
[ -f "$PEERS/guard.py" ] || PEERS=/work/shared/bench/peers

# The processes run outside the repository so that no .env is read: the configuration is this.
WORK=$(mktemp -d)
clean_redis() {
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del > /dev/null
}
finish() {
  clean_redis || true
  [ "${KEEP:-0}" = 1 ] || psql -w "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" > /dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap finish EXIT
export APP_ENV=development LOG_FORMAT=json RUST_LOG=warn,comet_worker=info
export DATABASE_URL=$PG_URL/$DB REDIS_URL REDIS_PREFIX=$PREFIX
export JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export APP_BASE_URL=http://bench.test EMAIL_OUTBOX_DIR=$WORK/outbox ALLOWED_INVITE_DOMAINS=''
# phase 3 enqueues ARCHIVE_N pings as fast as it can through the API: no rate limit or quota
export RATE_LIMIT_ENQUEUE_PER_PROJECT=100000000/1 JOB_MAX_OPEN_PER_PROJECT=100000000
# and keeps them all in Redis until archived (the default cap, 100,000, would trim some first)
export JOB_MAX_COMPLETED=$(( ARCHIVE_N + 100000 ))

measure() {
  cd "$WORK"
  psql -w "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" > /dev/null
  clean_redis
  "$BIN/comet-api" migrate > "$OUT/migrate.log" 2>&1
  api='' worker=''
  start_api() { # $1: log name
    PORT=$PORT "$BIN/comet-api" serve > "$OUT/$1-api.log" 2>&1 &
    api=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health" > /dev/null && return 0; sleep 0.1; done
    echo "the API did not start (see $OUT/$1-api.log)" >&2
    return 1
  }
  stop() { # the API and the worker this run started, by their ids
    if [ -n "$api" ]; then kill "$api" 2> /dev/null || true; wait "$api" 2> /dev/null || true; fi
    if [ -n "$worker" ]; then kill "$worker" 2> /dev/null || true; wait "$worker" 2> /dev/null || true; fi
    api='' worker=''
  }
  trap stop EXIT

  # 0. projects and tokens
  echo "== setup: $PROJECTS projects" >&2
  start_api setup
  local platform k project
  platform=$("$BIN/comet-api" token --platform -p projects:manage)
  : > "$WORK/tokens"
  for k in $(seq "$PROJECTS"); do
    project=$(curl -fsS -X POST "http://127.0.0.1:$PORT/api/v1/projects" -H "Authorization: Bearer $platform" \
      -H 'Content-Type: application/json' -d "{\"name\": \"Job search bench $k\"}" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["project"]["id"])')
    "$BIN/comet-api" token --project "$project" -p jobs:read -p jobs:write >> "$WORK/tokens"
    echo "$project" >> "$WORK/projects"
  done
  "$BIN/comet-api" token --platform -p queues:read -p jobs:read > "$WORK/platform.token"

  # 1. the seed
  echo "== seed: $ROWS finished jobs ($DEAD dead)" >&2
  python3 "$HERE/job_search_bench.py" dead --n "$DEAD" --out "$WORK/dead.csv" --meta "$OUT/dead.meta.json"
  local t0 t1 t2
  t0=$(date +%s%N)
  psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -v rows="$ROWS" -v dead="$DEAD" > "$OUT/seed.log" <<SQL
CREATE TEMP TABLE dead_src (n int PRIMARY KEY, queue text, last_error text, fingerprint text);
\copy dead_src FROM '$WORK/dead.csv' WITH (FORMAT csv)
CREATE TEMP TABLE proj AS
  SELECT (row_number() OVER (ORDER BY created_at, project_id) - 1)::int AS n, project_id
  FROM projects WHERE name LIKE 'Job search bench %';
SELECT setseed(0.14);
INSERT INTO job_archive (job_id, queue, kind, project_id, state, attempts, max_attempts, priority,
    payload, result, errors, last_error, fingerprint, request_id, worker, run_at, created_at,
    started_at, finished_at, archived_at)
SELECT (lpad(to_hex((extract(epoch FROM created) * 1000)::bigint), 12, '0') || '7'
        || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
       q, q, project_id, st, att, 5, 0,
       jsonb_build_object('projectId', project_id, 'ref', substr(h, 20, 12), 'n', i % 1000),
       CASE WHEN st = 'completed' THEN jsonb_build_object('ok', true, 'ms', i % 700) END,
       CASE WHEN le IS NULL THEN '[]'::jsonb ELSE
         (SELECT jsonb_agg(jsonb_build_object('attempt', a, 'error', le,
                  'at', fin - (att - a) * interval '30 seconds', 'worker', 'node-' || (i % 3)))
          FROM generate_series(1, CASE WHEN st = 'dead' THEN att ELSE att - 1 END) a) END,
       le, fp, 'req-' || substr(h, 16, 16), 'node-' || (i % 3) || ':' || (1000 + i % 7),
       created, created, started, fin, fin + interval '1 second'
FROM (
  SELECT g.*, fin - random() * interval '2 seconds' AS started,
         fin - random() * interval '7 seconds' - interval '2 seconds'
           - (CASE WHEN st = 'dead' THEN 4 WHEN i % 100 = 3 THEN 1 ELSE 0 END) * interval '30 seconds' AS created,
         CASE WHEN st = 'dead' THEN d.queue
              WHEN qb < 45 THEN 'deliver_notification' WHEN qb < 75 THEN 'process_event'
              WHEN qb < 83 THEN 'send_invitation' WHEN qb < 88 THEN 'ping'
              WHEN qb < 92 THEN 'send_password_reset' WHEN qb < 95 THEN 'rule_digest'
              WHEN qb < 98 THEN 'bulk_import' ELSE 'bucket_monitor' END AS q,
         CASE WHEN st = 'dead' THEN d.last_error
              WHEN st = 'completed' AND i % 100 = 3
                THEN 'timeout after ' || (5 + i % 50) || 's talking to db-' || (1 + i % 8) END AS le,
         d.fingerprint AS fp,
         CASE WHEN st = 'dead' THEN 5 WHEN st = 'cancelled' THEN i % 2
              WHEN i % 100 = 3 THEN 2 ELSE 1 END AS att,
         p.project_id
  FROM (
    SELECT i, md5(i::text || 'job-search') AS h,
           CASE WHEN i % 100 = 37 AND i / 100 < :dead THEN 'dead'
                WHEN i % 1000 = 500 THEN 'cancelled' ELSE 'completed' END AS st,
           now() - random() * interval '24 hours' AS fin,
           abs(hashint4(i)) % 100 AS qb, abs(hashint4(i + 1000003)) % (SELECT count(*) FROM proj) AS pb
    FROM generate_series(0, :rows - 1) i
  ) g
  JOIN proj p ON p.n = g.pb
  LEFT JOIN dead_src d ON g.st = 'dead' AND d.n = g.i / 100
) x;
SQL
  t1=$(date +%s%N)
  psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -qc 'VACUUM ANALYZE job_archive'
  t2=$(date +%s%N)
  psql -w "$DATABASE_URL" -AtF' ' -c "SELECT state, count(*) FROM job_archive GROUP BY 1 ORDER BY 1" > "$OUT/seed.counts"
  psql -w "$DATABASE_URL" -AtF' ' -c "SELECT pg_size_pretty(pg_total_relation_size('job_archive')),
      pg_size_pretty(pg_relation_size('job_archive')), pg_size_pretty(pg_relation_size('job_archive_error'))" > "$OUT/seed.size"
  echo "{\"insert_s\": $(( (t1 - t0) / 1000000 ))e-3, \"vacuum_s\": $(( (t2 - t1) / 1000000 ))e-3}" > "$OUT/seed.json"
  echo "   $(cat "$OUT/seed.json"); $(tr '\n' ' ' < "$OUT/seed.counts"); size $(cat "$OUT/seed.size")" >&2

  # 2. latency
  echo "== latency: $REQS requests per case after $WARMUP" >&2
  python3 - "$OUT/dead.meta.json" "$WORK/platform.token" "$WORK/tokens" > "$WORK/spec.json" <<'PY'
import json, sys, urllib.parse as up
meta, platform = json.load(open(sys.argv[1])), open(sys.argv[2]).read().strip()
project = open(sys.argv[3]).readline().strip()
cases = []
for who, tok in (("operator", platform), ("project", project)):
    for rarity in ("common", "rare", "none", "broad"):
        text = meta["texts"][rarity]
        cases.append({"name": f"error {rarity} ({who})", "group": "error", "who": who, "rarity": rarity,
                      "text": text, "expected": meta["dead_matches"][rarity] if who == "operator" else None,
                      "path": "/api/v1/jobs?state=dead&error=" + up.quote(text), "token": tok})
pages = [("completed, first page", "state=completed&limit=50", 0),
         ("completed, 100th page (cursor)", "state=completed&limit=50", 99),
         ("dead, first page", "state=dead&limit=50", 0),
         ("cancelled, first page", "state=cancelled&limit=50", 0),
         ("queue process_event, completed", "queue=process_event&state=completed&limit=50", 0),
         ("no filter (every state)", "limit=50", 0),
         ("queue process_event, every state", "queue=process_event&limit=50", 0)]
for who, tok in (("operator", platform), ("project", project)):
    for name, q, walk in pages:
        if who == "project" and walk:
            continue
        cases.append({"name": f"{name} ({who})", "group": "page", "who": who, "walk": walk,
                      "path": "/api/v1/jobs?" + q, "token": tok})
    cases.append({"name": f"failure groups ({who})", "group": "failures", "who": who,
                  "path": "/api/v1/jobs/failures", "token": tok})
print(json.dumps(cases))
PY
  python3 "$HERE/job_search_bench.py" latency --spec "$WORK/spec.json" --port "$PORT" --warmup "$WARMUP" \
    --reqs "$REQS" --out "$OUT/latency.json"
  stop
  # the plans of the queries measured, for the record
  python3 - "$OUT/dead.meta.json" > "$WORK/explain.sql" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["texts"]
cols = "job_id, queue, kind, project_id, state, attempts, max_attempts, priority, result, progress, errors, last_error, request_id, worker, run_at, created_at, started_at, finished_at"
for name, where in [("error common", f"state = 'dead' AND last_error ILIKE '%{t['common']}%'"),
                    ("error rare", f"state = 'dead' AND last_error ILIKE '%{t['rare']}%'"),
                    ("error none", f"state = 'dead' AND last_error ILIKE '%{t['none']}%'"),
                    ("completed", "state = 'completed'"), ("no filter", "true"),
                    ("queue, every state", "queue = 'process_event'")]:
    print(f"\\echo '-- {name}'")
    print(f"EXPLAIN (ANALYZE, BUFFERS) SELECT {cols} FROM job_archive WHERE {where} "
          "ORDER BY finished_at DESC, job_id DESC LIMIT 51;")
PY
  psql -w "$DATABASE_URL" -f "$WORK/explain.sql" > "$OUT/explain.txt" 2>&1 || true

  # 3. the archiver
  if [ "$ARCHIVE_N" -gt 0 ]; then
    echo "== archiver: $ARCHIVE_N pings" >&2
    local base_rows
    base_rows=$(psql -w "$DATABASE_URL" -Atqc "SELECT count(*) FROM job_archive WHERE queue = 'ping'")
    start_api enqueue
    python3 "$HERE/job_search_bench.py" enqueue --n "$ARCHIVE_N" --procs "$ENQ_PROCS" --tokens "$WORK/tokens" \
      --port "$PORT" --out "$OUT/enqueue.json"
    stop
    WORKER_QUEUES=ping WORKER_PORT=$WPORT "$BIN/comet-worker" > "$OUT/archive-worker.log" 2>&1 &
    worker=$!
    python3 "$HERE/job_search_bench.py" follow --n "$ARCHIVE_N" --base-rows "$base_rows" --db "$DATABASE_URL" \
      --prefix "$PREFIX" --redis-host "$RHOST" --redis-port "$RPORT" --metrics-port "$WPORT" --out "$OUT/archive.json"
    stop
  fi
  clean_redis
}

echo "== job search bench: ROWS=$ROWS DEAD=$DEAD ARCHIVE_N=$ARCHIVE_N; raw results in $OUT" >&2
T_START=$(date +%s)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
export -f measure clean_redis
export HERE OUT WORK BIN PG_URL DB PORT WPORT PREFIX RHOST RPORT ROWS DEAD PROJECTS REQS WARMUP ARCHIVE_N ENQ_PROCS
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
PGV=$(psql -w "$PG_URL/postgres" -Atqc 'SHOW server_version' | cut -d' ' -f1)
export OUT MD DATE COMMIT FOREIGN LOAD_BEFORE LOAD_AFTER CPU_MODEL MEM_GIB PGV T_START
export SHARED_BUFFERS=$(psql -w "$PG_URL/postgres" -Atqc 'SHOW shared_buffers') NPROC=$(nproc) UNAME=$(uname -sr)
python3 "$HERE/job_search_table.py"
