#!/usr/bin/env bash
# The bulk user import benchmark (issue 13): real release `comet-api` and `comet-worker`
# (WORKER_QUEUES=bulk_import) on a dedicated database and Redis prefix. Prints one table
# (Comet, the reference, the target) and records it in BENCHMARKS.md (between
# <!-- bench:imports:start --> and <!-- bench:imports:end -->).
#
#   bash api/bench/imports.sh          (or BENCHES=imports ./dev bench)
#
# The reference is Postgres's own `COPY`, not a peer: none of the peers in
# ../shared/bench/peers (BullMQ, Celery, graphile-worker) has an import feature. The files are
# made by imports_gen.py (rows `email,name,roles`; ~5 % invalid: bad emails, an unknown role,
# names over 100 characters; ~1 % later duplicates of earlier emails; roles by the names of a
# project's default roles, `admin` and `member`). Phases, in one database:
#   0. setup: four projects made through the API (smoke, COPY, CSV, XLSX: each with its default
#      roles), a project token with user:create and user:read for each
#   1. smoke: a SMOKE_ROWS (200) CSV and a 10-row XLSX imported into the smoke project; the
#      run stops unless both complete with the expected created / failed counts
#   2. reference: the ROWS file's valid rows, de-duplicated, lower-cased, each with a new id,
#      loaded with `\copy users (user_id, project_id, email, name, status) FROM` (psql's COPY
#      FROM STDIN, one statement) into its project, then their roles with
#      `\copy user_roles (project_id, user_id, role_id)`; each timed from psql's start to its
#      exit. Twice, each time into the empty table (`TRUNCATE users CASCADE` before and after):
#      with time-ordered UUIDv7 ids as the import makes them (`Uuid::now_v7()`: the reference),
#      then with random uuid4 ids (every index insert on user_id lands on a random page).
#   3. the ROWS (1,000,000) CSV: fresh API and worker processes; POST /api/v1/users/imports
#      (raw body, text/csv, onDuplicate=skip, sendInvitations=false), then
#      GET /api/v1/users/imports/{id} every POLL_MS (100) ms until it ends. Measures rows/s
#      (processed / (finishedAt - startedAt)), upload start → finishedAt, the upload request's
#      time, upload start → the first GET with processed > 0, the API's peak RSS (VmHWM of a
#      process started for this upload) and the worker's (VmHWM of a worker started for this
#      import), and the counts against the generator's.
#   4. the XLSX_ROWS (100,000) XLSX (shared strings, as Excel writes them) the same way, into
#      its own project (the users table then holds the CSV's users too).
# A CHECKPOINT precedes each COPY and each import. Exits 1 (after writing the table) when an
# import did not complete with the expected counts.
#
# Env knobs: ROWS (1000000) XLSX_ROWS (100000) SMOKE_ROWS (200) POLL_MS (100) SEED (13)
#   DB (comet_bench_imports; dropped and recreated)  PG_URL (postgres://postgres@127.0.0.1:5432)
#   REDIS_URL (redis://127.0.0.1:6379)  PREFIX (bench-imports; its keys deleted before and after)
#   PORT (18101)  MD (<repo>/BENCHMARKS.md; MD= leaves it alone)
#   BUILD (1; 0 = use the binaries as they are)  PROFILE (release; `debug` for a quick look:
#   its figures are not comparable)  KEEP (0; 1 keeps the database afterwards)
#   LOCK (/tmp/bench.lock; LOCK= disables)  QUIET_WAIT (300)   [the peers' lock and guard.py]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

ROWS=${ROWS:-1000000}
XLSX_ROWS=${XLSX_ROWS:-100000}
SMOKE_ROWS=${SMOKE_ROWS:-200}
POLL_MS=${POLL_MS:-100}
SEED=${SEED:-13}
DB=${DB:-comet_bench_imports}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PREFIX=${PREFIX:-bench-imports}
PORT=${PORT:-18101}
MD=${MD-$ROOT/BENCHMARKS.md}
LOCK=${LOCK-/tmp/bench.lock}
QUIET_WAIT=${QUIET_WAIT:-300}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench/imports-$STAMP}
mkdir -p "$OUT"
[[ $DB =~ ^[A-Za-z0-9_]+$ ]] || { echo "bad DB name $DB" >&2; exit 1; }
for n in "$ROWS" "$XLSX_ROWS" "$SMOKE_ROWS" "$POLL_MS" "$SEED"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bad number $n" >&2; exit 1; }
done

for tool in psql redis-cli python3 flock curl; do
  command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
read -r RHOST RPORT <<< "$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 6379)' "$REDIS_URL")"
redis-cli -h "$RHOST" -p "$RPORT" ping > /dev/null || { echo "Redis not reachable at $REDIS_URL" >&2; exit 1; }
psql -w "$PG_URL/postgres" -Atqc 'SELECT 1' > /dev/null || { echo "Postgres not reachable at $PG_URL" >&2; exit 1; }

PROFILE=${PROFILE:-release}
[[ $PROFILE =~ ^(release|debug)$ ]] || { echo "PROFILE is release or debug" >&2; exit 1; }
if [ "${BUILD:-1}" = 1 ]; then
  echo "== building comet-api and comet-worker ($PROFILE)" >&2
  if [ "$PROFILE" = release ]; then
    cargo build --release --quiet -p comet-api -p comet-worker >&2
  else
    cargo build --quiet -p comet-api -p comet-worker >&2
  fi
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
[ -x "$BIN/comet-api" ] && [ -x "$BIN/comet-worker" ] || { echo "no $PROFILE binaries in $BIN" >&2; exit 1; }

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
export APP_BASE_URL=http://bench.test EMAIL_OUTBOX_DIR=$WORK/outbox WORKER_PORT=0
export ALLOWED_INVITE_DOMAINS='' WORKER_QUEUES=bulk_import

# Follows one import: uploads the file (streamed, Content-Length set), then polls the import
# until it ends, sampling the API's and the worker's RSS; writes a JSON summary.
#   follow.py FILE CONTENT_TYPE QUERY TOKEN API_PID WORKER_PID OUT_JSON
cat > "$WORK/follow.py" <<'PY'
import http.client, json, os, sys, threading, time
from datetime import datetime

path, ctype, query, token, api_pid, worker_pid, out = sys.argv[1:8]
port, poll = int(os.environ["PORT"]), int(os.environ["POLL_MS"]) / 1000
TICK = os.sysconf("SC_CLK_TCK")


def status_kb(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None


def cpu_s(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except OSError:
        return None


class Sampler(threading.Thread):
    """The highest VmRSS of `pid` seen every 10 ms while running."""
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, status_kb(self.pid, "VmRSS") or 0)
            time.sleep(0.01)


def ts(s):
    return datetime.fromisoformat(s).timestamp() if s else None


auth = {"Authorization": f"Bearer {token}"}
r = {"file": os.path.basename(path), "bytes": os.path.getsize(path),
     "api_rss_start_kb": status_kb(api_pid, "VmRSS"), "worker_rss_start_kb": status_kb(worker_pid, "VmRSS")}
api_s, worker_s = Sampler(api_pid), Sampler(worker_pid)
api_s.start()
worker_s.start()
api_cpu0, worker_cpu0 = cpu_s(api_pid), cpu_s(worker_pid)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600, blocksize=1 << 20)
t0 = time.time()
with open(path, "rb") as body:
    conn.request("POST", f"/api/v1/users/imports?{query}", body=body,
                 headers={**auth, "Content-Type": ctype, "Content-Length": str(r["bytes"])})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8", "replace")
t_up = time.time()
api_s.stop.set()
api_s.join()
r.update(upload_s=t_up - t0, upload_status=resp.status, api_hwm_kb=status_kb(api_pid, "VmHWM"),
         api_peak_sampled_kb=api_s.peak, api_upload_cpu_s=(cpu_s(api_pid) or 0) - (api_cpu0 or 0))
if resp.status != 202:
    r["upload_answer"] = text[:4000]
    json.dump(r, open(out, "w"), indent=1)
    print(f"upload answered {resp.status}: {text[:2000]}", file=sys.stderr)
    sys.exit(2)
accepted = json.loads(text)["data"]
iid = accepted["importId"]
r.update(import_id=iid, job_id=accepted.get("jobId"), accepted=accepted.get("import"))
first, polls, last_change, view = None, 0, time.time(), None
while True:
    conn.request("GET", f"/api/v1/users/imports/{iid}", headers=auth)
    resp = conn.getresponse()
    text = resp.read().decode("utf-8", "replace")
    polls += 1
    if resp.status != 200:
        print(f"GET import answered {resp.status}: {text[:500]}", file=sys.stderr)
        time.sleep(1)
        continue
    v = json.loads(text)["data"]
    now = time.time()
    if view is None or v["processed"] != view["processed"]:
        last_change = now
    view = v
    if first is None and v["processed"] > 0:
        first = now - t0
    if v["status"] in ("completed", "failed", "cancelled"):
        break
    if now - last_change > 600:
        print("no progress for 10 minutes: giving up", file=sys.stderr)
        break
    time.sleep(poll if first is None else max(poll, 0.5))
t_seen = time.time()
worker_s.stop.set()
worker_s.join()
started, finished = ts(view.get("startedAt")), ts(view.get("finishedAt"))
run_s = (finished - started) if started and finished else None
r.update(first_progress_s=first, seen_end_s=t_seen - t0, polls=polls,
         wall_s=(finished - t0) if finished else None, run_s=run_s,
         queued_s=(started - t_up) if started else None,
         rows_per_s=(view["processed"] / run_s) if run_s else None,
         created_per_s=(view["created"] / run_s) if run_s else None,
         worker_hwm_kb=status_kb(worker_pid, "VmHWM"), worker_peak_sampled_kb=worker_s.peak,
         worker_cpu_s=(cpu_s(worker_pid) or 0) - (worker_cpu0 or 0),
         api_hwm_end_kb=status_kb(api_pid, "VmHWM"),
         view={k: v for k, v in view.items() if k != "errors"}, first_errors=view.get("errors", [])[:5])
json.dump(r, open(out, "w"), indent=1)
print(f"   {view['status']}: {view['processed']} rows in {run_s}s, created {view['created']}, "
      f"failed {view['failed']}, skipped {view['skipped']}; worker VmHWM {r['worker_hwm_kb']} kB, "
      f"API VmHWM {r['api_hwm_kb']} kB", file=sys.stderr)
sys.exit(0 if view["status"] == "completed" else 3)
PY

# One measured run, under the peers' lock and noise guard; everything it needs is made inside.
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
  start_worker() { # $1: log name
    "$BIN/comet-worker" > "$OUT/$1-worker.log" 2>&1 &
    worker=$!
    sleep 2
    kill -0 "$worker" || { echo "the worker did not start (see $OUT/$1-worker.log)" >&2; return 1; }
  }
  stop() { # the API and the worker this run started, by their ids
    if [ -n "$api" ]; then kill "$api" 2> /dev/null || true; wait "$api" 2> /dev/null || true; fi
    if [ -n "$worker" ]; then kill "$worker" 2> /dev/null || true; wait "$worker" 2> /dev/null || true; fi
    api='' worker=''
  }
  trap stop EXIT

  # 0. four projects (each with its default roles) and their tokens
  echo "== setup" >&2
  start_api setup
  local platform name project
  platform=$("$BIN/comet-api" token --platform)
  for name in smoke copy csv xlsx; do
    project=$(curl -fsS -X POST "http://127.0.0.1:$PORT/api/v1/projects" -H "Authorization: Bearer $platform" \
      -H 'Content-Type: application/json' -d "{\"name\": \"Imports bench $name\"}" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["project"]["id"])')
    echo "$project" > "$WORK/$name.project"
    "$BIN/comet-api" token --project "$project" -p user:create -p user:read > "$WORK/$name.token"
  done
  stop
  local copy_project roles
  copy_project=$(cat "$WORK/copy.project")
  roles=$(psql -w "$DATABASE_URL" -Atqc "SELECT string_agg(name || '=' || role_id, ',') FROM roles WHERE project_id = '$copy_project'")
  echo "== generating: smoke ($SMOKE_ROWS CSV rows, 10 XLSX rows), $ROWS CSV rows (+ COPY files), $XLSX_ROWS XLSX rows" >&2
  python3 "$HERE/imports_gen.py" csv --rows "$SMOKE_ROWS" --seed "$SEED" --prefix s --out "$WORK/smoke.csv" --meta "$OUT/smoke-csv.meta.json" 2> /dev/null
  python3 "$HERE/imports_gen.py" xlsx --rows 10 --seed "$SEED" --prefix sx --out "$WORK/smoke.xlsx" --meta "$OUT/smoke-xlsx.meta.json" 2> /dev/null
  python3 "$HERE/imports_gen.py" csv --rows "$ROWS" --seed "$SEED" --out "$WORK/users.csv" --meta "$OUT/csv.meta.json" \
    --copy-project "$copy_project" --roles "$roles" --copy-out "$WORK/copy" 2> /dev/null
  python3 "$HERE/imports_gen.py" xlsx --rows "$XLSX_ROWS" --seed "$SEED" --prefix x --out "$WORK/users.xlsx" --meta "$OUT/xlsx.meta.json" 2> /dev/null
  ls -l "$WORK"/users.* > "$OUT/files.txt"

  local q='onDuplicate=skip&sendInvitations=false'
  # 1. smoke: both formats must complete with the expected counts
  echo "== smoke" >&2
  start_api smoke
  start_worker smoke
  python3 "$WORK/follow.py" "$WORK/smoke.csv" text/csv "$q&fileName=smoke.csv" "$(cat "$WORK/smoke.token")" \
    "$api" "$worker" "$OUT/smoke-csv.json" || { echo "the smoke CSV import failed: $OUT/smoke-csv.json, $OUT/smoke-worker.log" >&2; return 1; }
  python3 "$WORK/follow.py" "$WORK/smoke.xlsx" application/octet-stream "$q&fileName=smoke.xlsx" "$(cat "$WORK/smoke.token")" \
    "$api" "$worker" "$OUT/smoke-xlsx.json" || { echo "the smoke XLSX import failed: $OUT/smoke-xlsx.json, $OUT/smoke-worker.log" >&2; return 1; }
  stop
  python3 - "$OUT" <<'PY'
import json, sys
bad = []
for kind in ("csv", "xlsx"):
    r, m = json.load(open(f"{sys.argv[1]}/smoke-{kind}.json")), json.load(open(f"{sys.argv[1]}/smoke-{kind}.meta.json"))
    v = r["view"]
    want = (m["valid"], m["invalid"] + m["duplicates"], 0)
    if (v["created"], v["failed"], v["skipped"]) != want:
        bad.append(f"smoke {kind}: created/failed/skipped {v['created']}/{v['failed']}/{v['skipped']}, expected {want}; "
                   f"first errors {r['first_errors']}")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
PY

  # 2. the reference: COPY of the valid rows, with time-ordered ids (as the import makes them)
  # then with random ones, each into the empty table, which is emptied again after
  local t0 t1 t2 v
  psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -qc 'TRUNCATE users CASCADE' 2> /dev/null
  for v in v7 v4; do
    echo "== reference: COPY ($v ids)" >&2
    psql -w "$DATABASE_URL" -qc 'CHECKPOINT'
    t0=$(date +%s%N)
    psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -qc "\\copy users (user_id, project_id, email, name, status) FROM '$WORK/copy.$v.users' WITH (FORMAT csv)"
    t1=$(date +%s%N)
    psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -qc "\\copy user_roles (project_id, user_id, role_id) FROM '$WORK/copy.$v.roles' WITH (FORMAT csv)"
    t2=$(date +%s%N)
    psql -w "$DATABASE_URL" -AtF' ' -c "SELECT (SELECT count(*) FROM users WHERE project_id = '$copy_project'),
      (SELECT count(*) FROM user_roles WHERE project_id = '$copy_project')" > "$OUT/copy-$v.count"
    echo "{\"users_s\": $(( (t1 - t0) / 1000 ))e-6, \"roles_s\": $(( (t2 - t1) / 1000 ))e-6}" > "$OUT/copy-$v.json"
    echo "   $(cat "$OUT/copy-$v.json") rows: $(cat "$OUT/copy-$v.count")" >&2
    psql -w "$DATABASE_URL" -v ON_ERROR_STOP=1 -qc 'TRUNCATE users CASCADE' 2> /dev/null
  done

  # 3. the CSV, then 4. the XLSX: fresh API and worker for each
  local kind file ctype
  for kind in csv xlsx; do
    if [ "$kind" = csv ]; then file=$WORK/users.csv ctype=text/csv; else file=$WORK/users.xlsx ctype=application/octet-stream; fi
    echo "== $kind: $(stat -c %s "$file") bytes" >&2
    psql -w "$DATABASE_URL" -qc 'CHECKPOINT'
    start_api "$kind"
    start_worker "$kind"
    python3 "$WORK/follow.py" "$file" "$ctype" "$q&fileName=users.$kind" "$(cat "$WORK/$kind.token")" \
      "$api" "$worker" "$OUT/$kind.json" || echo "the $kind import did not complete: see $OUT/$kind.json, $OUT/$kind-worker.log" >&2
    stop
    project=$(cat "$WORK/$kind.project")
    psql -w "$DATABASE_URL" -AtF' ' -c "SELECT (SELECT count(*) FROM users WHERE project_id = '$project'),
      (SELECT count(*) FROM user_roles WHERE project_id = '$project')" > "$OUT/$kind.count"
  done
  clean_redis
}

echo "== imports bench: ROWS=$ROWS XLSX_ROWS=$XLSX_ROWS; raw results in $OUT" >&2
T_START=$(date +%s)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
export -f measure clean_redis
export HERE OUT WORK BIN PG_URL DB PORT PREFIX RHOST RPORT ROWS XLSX_ROWS SMOKE_ROWS POLL_MS SEED
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
python3 - "$OUT" "$MD" <<PY
import json, os, re, sys
out, md = sys.argv[1], sys.argv[2]
START, END = "<!-- bench:imports:start -->", "<!-- bench:imports:end -->"


def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None


copy, copy4, meta, xmeta = load("copy-v7.json"), load("copy-v4.json"), load("csv.meta.json"), load("xlsx.meta.json")
c, x = load("csv.json") or {}, load("xlsx.json") or {}
copy_users, copy_roles = (int(n) for n in open(os.path.join(out, "copy-v7.count")).read().split())
copy_rate = copy_users / copy["users_s"]
copy_both = copy_users / (copy["users_s"] + copy["roles_s"])
copy4_rate = copy_users / copy4["users_s"]


def n(v, unit="", d=0):
    return "—" if v is None else f"{v:,.{d}f}{unit}"


def mib(kb):
    return "—" if kb is None else f"{kb / 1024:,.1f} MiB"


def met(ok):
    return "—" if ok is None else ("yes" if ok else "**no**")


def counts(r, m, kind):
    v = r.get("view") or {}
    db = open(os.path.join(out, f"{kind}.count")).read().split() if os.path.exists(os.path.join(out, f"{kind}.count")) else ["?", "?"]
    want = (m["valid"], m["invalid"] + m["duplicates"], 0)
    got = (v.get("created"), v.get("failed"), v.get("skipped"))
    return (f"status {v.get('status', r.get('upload_status', '?'))}; created / failed / skipped "
            f"{got[0]:,} / {got[1]:,} / {got[2]:,}; users / user_roles rows {db[0]} / {db[1]}"
            if None not in got else f"upload answered {r.get('upload_status')}"), \
           (got == want and db[0] == str(m["valid"]) and db[1] == str(m["role_grants"])), \
           (f"expected {want[0]:,} / {want[1]:,} / 0 and {m['valid']:,} / {m['role_grants']:,} rows "
            f"({m['invalid']:,} invalid, {m['duplicates']:,} duplicates)")


rate, xrate = c.get("rows_per_s"), x.get("rows_per_s")
pct = rate / copy_rate * 100 if rate else None
cs, cok, cwant = counts(c, meta, "csv")
xs, xok, xwant = counts(x, xmeta, "xlsx")
rows = [
    (f"CSV, {meta['rows']:,} rows ({c.get('bytes', 0) / 1e6:,.1f} MB): rows processed / (finishedAt − startedAt)",
     n(rate, " rows/s"), f"COPY users: {n(copy_rate, ' rows/s')} ({copy_users:,} valid rows in {copy['users_s']:.2f} s; "
     f"UUIDv7 ids, as the import's)",
     "≥ 50 % of COPY", met(pct >= 50 if pct else None)),
    ("CSV: Comet's rate as a share of COPY's", n(pct, " %", 1),
     f"created rows / s: {n(c.get('created_per_s'), ' rows/s')} = "
     f"{n(c['created_per_s'] / copy_rate * 100 if c.get('created_per_s') else None, ' %', 1)}; "
     f"COPY users + user_roles: {n(copy_both, ' rows/s')} ({copy['users_s'] + copy['roles_s']:.2f} s)", "≥ 50 %",
     met(pct >= 50 if pct else None)),
    ("CSV: Comet's rate as a share of COPY's with random ids (uuid4)", n(rate / copy4_rate * 100 if rate else None, " %", 1),
     f"COPY users: {n(copy4_rate, ' rows/s')} ({copy4['users_s']:.2f} s); + user_roles "
     f"{copy4['users_s'] + copy4['roles_s']:.2f} s", "—", "—"),
    ("CSV: upload start → finishedAt (wall)", n(c.get("wall_s"), " s", 1),
     f"COPY users + user_roles: {copy['users_s'] + copy['roles_s']:.1f} s", "—", "—"),
    ("CSV: the upload request (202 answered)", n(c.get("upload_s"), " s", 2), "—", "—", "—"),
    (f"CSV: upload start → first GET with processed > 0 (polled every {os.environ.get('POLL_MS', '100')} ms)",
     n(c.get("first_progress_s"), " s", 2), "—", "—", "—"),
    ("CSV: API peak RSS during the upload (VmHWM of a fresh process; RSS before the upload)",
     f"{mib(c.get('api_hwm_kb'))} ({mib(c.get('api_rss_start_kb'))})", "—", "< 50 MB",
     met(c["api_hwm_kb"] * 1024 < 50e6 if c.get("upload_status") == 202 else None)),
    ("CSV: worker peak RSS (VmHWM of a fresh worker; RSS before the import)",
     f"{mib(c.get('worker_hwm_kb'))} ({mib(c.get('worker_rss_start_kb'))})", "—", "< 100 MB",
     met(c["worker_hwm_kb"] * 1024 < 100e6 if c.get("worker_hwm_kb") else None)),
    ("CSV: counts", cs, cwant, "as generated", met(cok)),
    (f"XLSX, {xmeta['rows']:,} rows ({x.get('bytes', 0) / 1e6:,.1f} MB, shared strings): rows / s",
     n(xrate, " rows/s"), "—", "—", "—"),
    ("XLSX: upload start → finishedAt (wall); upload request", f"{n(x.get('wall_s'), ' s', 1)}; {n(x.get('upload_s'), ' s', 2)}",
     "—", "—", "—"),
    ("XLSX: worker peak RSS (VmHWM); API peak RSS during the upload",
     f"{mib(x.get('worker_hwm_kb'))}; {mib(x.get('api_hwm_kb'))}", "—", "< 100 MB; < 50 MB",
     met(x["worker_hwm_kb"] * 1024 < 100e6 and x["api_hwm_kb"] * 1024 < 50e6) if x.get("worker_hwm_kb") else "—"),
    ("XLSX: counts", xs, xwant, "as generated", met(xok)),
]
table = ["| measure | Comet | reference: Postgres COPY (no peer has an import) | target | met? |", "|---|---|---|---|---|"]
table += [f"| {a} | {v} | {ref} | {t} | {m} |" for a, v, ref, t, m in rows]
print("\n".join(table))
foreign = "$FOREIGN"
section = "\n".join([
    START,
    f"Measured $DATE with \`bash api/bench/imports.sh\` (ROWS=$ROWS XLSX_ROWS=$XLSX_ROWS; took "
    f"$(( ($(date +%s) - T_START + 30) / 60 )) min), commit \`$COMMIT\`.",
    "",
    f"- machine: $(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB RAM, $(uname -sr); load average before "
    f"$LOAD_BEFORE, after $LOAD_AFTER (1/5/15 min)",
    f"- Postgres $PGV (shared_buffers $(psql -w "$PG_URL/postgres" -Atqc 'SHOW shared_buffers'), "
    f"synchronous_commit $(psql -w "$PG_URL/postgres" -Atqc 'SHOW synchronous_commit')), $PROFILE binaries, "
    "one API and one worker process (WORKER_QUEUES=bulk_import), both started for each import",
    f"- share of the machine's CPU used by other processes during the run: {float(foreign):.2f}"
    if foreign not in ("", "null") else "- (no guard report)",
    f"- CPU: worker {n(c.get('worker_cpu_s'), ' s', 1)} for the CSV import ({n(c.get('run_s'), ' s', 1)} of running), "
    f"{n(x.get('worker_cpu_s'), ' s', 1)} for the XLSX ({n(x.get('run_s'), ' s', 1)}); API "
    f"{n(c.get('api_upload_cpu_s'), ' s', 1)} for the CSV upload; queued (202 received → startedAt, 0 when the "
    f"job started first) {n(max(0, c.get('queued_s') or 0), ' s', 2)} / {n(max(0, x.get('queued_s') or 0), ' s', 2)}",
    "",
    *table,
    END,
])
if md:
    text = open(md).read()
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Bulk import (issue 13)\n\n" + section + "\n"
    open(md, "w").write(text)
sys.exit(0 if cok and xok else 1)
PY
