#!/usr/bin/env python3
"""Events and rules benchmark driver (run by api/bench/events.sh; Python 3 standard library only).

Against the release binaries and a database already migrated, with a project, its API key, its
20 rules, roles and users already made by events.sh, it runs one `comet-api` (and one
`comet-worker` where a phase needs it) and measures:

  single    POST /api/v1/events open loop at --single-rate req/s for --single-secs s: each
            request is due at t0 + i/rate and its latency runs from when it was due (a request
            that waits for a free connection waits on the clock), so queueing shows in p50/p99.
            The worker is not running (the API alone is measured; the jobs wait in the outbox).
  batch     --batch-n events as POST /api/v1/events/batch of 1000, --batch-conc in flight;
            events/s from the first request to the last answer (worker still not running)
  process   the worker is started on the backlog the two phases above left (events and their
            outbox rows): processed events/s between --proc-skip s after the first event is
            processed and --proc-secs s later (or the backlog's end)
  latency   the backlog is dropped, a fresh worker runs; events open loop at --lat-rate/s for
            --lat-secs s; per event, from its 202 to the first poll (psql, every --poll-ms) that
            sees its notification rows

Writes one JSON object with the figures to --out.
"""
import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from users_bench import pct, wait_health  # noqa: E402

now = time.monotonic

EVENT = {"type": "transfer.failed", "source": "bench",
         "payload": {"amount": 1500, "currency": "EUR", "account": "acc-1234", "attempt": 2}}


class Conn:
    """One keep-alive HTTP/1.1 connection with fixed headers (enough for the API's answers)."""

    def __init__(self, port, headers):
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.r = self.w = None

    async def request(self, method, path, body=b""):
        if self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        req = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"{self.head}Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.w.write(req)
        await self.w.drain()
        status = int((await self.r.readline()).split()[1])
        length = 0
        while True:
            line = await self.r.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        return status, await self.r.readexactly(length)

    def close(self):
        if self.w:
            self.w.close()
            self.r = self.w = None


async def open_loop(port, headers, rate, secs, body, max_conns, on_answer=None):
    """Sends `body` open loop at `rate`/s for `secs` s; returns (latencies ms, statuses, late)."""
    idle = asyncio.Queue()
    for _ in range(min(64, max_conns)):
        idle.put_nowait(Conn(port, headers))
    opened = idle.qsize()
    lats, statuses, tasks = [], {}, []

    async def one(due):
        nonlocal opened
        if idle.empty() and opened < max_conns:
            opened += 1
            c = Conn(port, headers)
        else:
            c = await idle.get()
        try:
            status, payload = await c.request("POST", "/api/v1/events", body)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            c.close()
            status, payload = 0, b""
        t = now()
        lats.append((t - due) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        if on_answer and status == 202:
            on_answer(t, payload)
        idle.put_nowait(c)

    n = int(rate * secs)
    t0 = now() + 0.05
    for i in range(n):
        due = t0 + i / rate
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return lats, statuses, opened


async def rust_open_loop(args, body, rate, secs):
    """`comet-bench http`: the same open loop as `open_loop`, from a Rust process (less CPU taken
    from the API and Postgres on a small machine). Returns its JSON line."""
    body_file = os.path.join(args.logs, "event.json")
    with open(body_file, "wb") as f:
        f.write(body)
    p = await asyncio.create_subprocess_exec(
        f"{args.bin}/comet-bench", "http", "--url", f"http://127.0.0.1:{args.port}/api/v1/events",
        "--rate", str(int(rate)), "--secs", str(int(secs)), "--header", f"X-API-Key: {args.api_key}",
        "--body-file", body_file, "--max-conns", str(args.single_conns),
        "--series", os.path.join(args.logs, "single-series.txt"),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"comet-bench http exited with {p.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


def summary(lats):
    return {"n": len(lats), "p50_ms": pct(lats, 50), "p99_ms": pct(lats, 99), "max_ms": max(lats)}


class Psql:
    """A long-lived psql session to run small queries with low overhead."""

    def __init__(self, url):
        self.p = subprocess.Popen(["psql", "-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def query(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo __END__\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("psql ended")
            line = line.rstrip("\n")
            if line == "__END__":
                return out
            if line:
                out.append(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


PG_DB = ""


def pg_cpu():
    """CPU seconds the Postgres backends serving the bench's database used so far (not the
    server's shared processes: WAL writer, checkpointer; nor other databases' backends)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    cmd = f.read()
                if not cmd.startswith("postgres: ") or f" {PG_DB} " not in cmd:
                    continue
                total += cpu_of(pid)
            except OSError:
                pass
    return total


def cpu_of(pid):
    """CPU seconds (user + system) a process used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--port", type=int, default=18091)
    ap.add_argument("--db", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--single-rate", type=float, default=2000)
    ap.add_argument("--single-secs", type=float, default=10)
    ap.add_argument("--single-conns", type=int, default=256)
    ap.add_argument("--driver", choices=["rust", "python"], default="rust",
                    help="the single-ingest load generator: comet-bench http (default) or this script's asyncio one")
    ap.add_argument("--batch-n", type=int, default=50000)
    ap.add_argument("--batch-conc", type=int, default=2)
    ap.add_argument("--proc-skip", type=float, default=2)
    ap.add_argument("--proc-secs", type=float, default=20)
    ap.add_argument("--lat-rate", type=float, default=100)
    ap.add_argument("--lat-secs", type=float, default=10)
    ap.add_argument("--poll-ms", type=float, default=1)
    ap.add_argument("--ingest-worker", type=int, default=0,
                    help="1: the worker runs during the ingest phases too (its relay keeps the outbox short)")
    ap.add_argument("--clean", required=True, help="a command that deletes the Redis prefix's keys")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    procs = []

    def spawn(name, cmd, extra):
        log = open(os.path.join(args.logs, f"{name}.log"), "a")
        p = subprocess.Popen(cmd, env=dict(os.environ, **extra), stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    def stop(p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    global PG_DB
    PG_DB = args.db.rsplit("/", 1)[-1]
    headers = {"X-API-Key": args.api_key}
    body = json.dumps(EVENT).encode()
    project = args.project
    sql = Psql(args.db)
    result = {"self_cpu": {}}
    try:
        api = spawn("api", [f"{args.bin}/comet-api", "serve"], {"PORT": str(args.port)})
        await wait_health(args.port, api)

        # warm-up: connections, prepared statements, the key lookup
        await open_loop(args.port, headers, 500, 2, body, 64)

        ingest_worker = None
        if args.ingest_worker:
            ingest_worker = spawn("worker", [f"{args.bin}/comet-worker"], {"WORKER_PORT": "0"})
            await asyncio.sleep(1.0)

        # 1. single events, open loop
        api0, pg0 = cpu_of(api.pid), pg_cpu()
        if args.driver == "rust":
            r = await rust_open_loop(args, body, args.single_rate, args.single_secs)
            result["single"] = dict(n=r["n"], p50_ms=r["p50_ms"], p99_ms=r["p99_ms"], max_ms=r["max_ms"],
                                    offered=args.single_rate, worker=bool(args.ingest_worker),
                                    secs=args.single_secs, achieved=r["achieved"],
                                    statuses={int(k): v for k, v in r["statuses"].items()},
                                    conns=r["max_conns"], driver="comet-bench http (Rust)",
                                    driver_cpu_s=r["driver_cpu_s"])
        else:
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            t = now()
            lats, statuses, conns = await open_loop(args.port, headers, args.single_rate, args.single_secs,
                                                    body, args.single_conns)
            wall = now() - t
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            result["single"] = dict(summary(lats), offered=args.single_rate, worker=bool(args.ingest_worker),
                                    secs=args.single_secs, achieved=len(lats) / wall, statuses=statuses,
                                    conns=conns, driver="Python asyncio",
                                    driver_cpu_s=ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
        result["single"].update(api_cpu_s=cpu_of(api.pid) - api0, pg_cpu_s=pg_cpu() - pg0)
        print(f"single: {result['single']}", file=sys.stderr)

        # 2. batches of 1000
        batch = json.dumps({"events": [EVENT] * 1000}).encode()
        n_batches = max(1, args.batch_n // 1000)
        todo = list(range(n_batches))
        bstat, blats = {}, []

        async def batcher():
            c = Conn(args.port, headers)
            while todo:
                todo.pop()
                t1 = now()
                s, _ = await c.request("POST", "/api/v1/events/batch", batch)
                blats.append((now() - t1) * 1000)
                bstat[s] = bstat.get(s, 0) + 1
            c.close()

        api0, pg0 = cpu_of(api.pid), pg_cpu()
        t = now()
        await asyncio.gather(*(batcher() for _ in range(args.batch_conc)))
        wall = now() - t
        accepted = bstat.get(202, 0) * 1000
        result["batch"] = {"events": accepted, "secs": wall, "events_per_s": accepted / wall,
                           "statuses": bstat, "request_p50_ms": pct(blats, 50),
                           "request_p99_ms": pct(blats, 99), "api_cpu_s": cpu_of(api.pid) - api0,
                           "pg_cpu_s": pg_cpu() - pg0}
        print(f"batch: {result['batch']}", file=sys.stderr)

        if ingest_worker:
            stop(ingest_worker)

        # 3. process_event on the backlog
        backlog = int(sql.query(f"SELECT count(*) FROM events WHERE project_id = '{project}' "
                                "AND processed_at IS NULL")[0])
        worker = spawn("worker", [f"{args.bin}/comet-worker"], {"WORKER_PORT": "0"})
        done_q = (f"SELECT count(*) FROM events WHERE project_id = '{project}' "
                  "AND processed_at IS NOT NULL")
        base = int(sql.query(done_q)[0])
        t_start = now()
        while int(sql.query(done_q)[0]) == base:
            if worker.poll() is not None or now() - t_start > 120:
                raise RuntimeError("the worker processes nothing")
            await asyncio.sleep(0.05)
        t_first = now()
        await asyncio.sleep(args.proc_skip)
        # Statistics as a running deployment has them (autovacuum analyzes a growing table
        # within a minute): a fresh database's backends otherwise keep the foreign-key checks'
        # plans made while `notifications` was empty, which walk the project's rows by
        # (project_id, created_at) instead of the primary key, until the next ANALYZE
        # invalidates them. BENCHMARKS.md, "Events and rules".
        sql.query("ANALYZE")
        await asyncio.sleep(0.5)
        n1, t1, w1, pg1 = int(sql.query(done_q)[0]), now(), cpu_of(worker.pid), pg_cpu()
        while now() - t1 < args.proc_secs:
            await asyncio.sleep(0.5)
            if int(sql.query(done_q)[0]) - base >= backlog:
                break
        n2, t2, w2, pg2 = int(sql.query(done_q)[0]), now(), cpu_of(worker.pid), pg_cpu()
        notes = sql.query(f"SELECT count(*), (SELECT count(*) FROM notification_recipients "
                          f"WHERE project_id = '{project}') FROM notifications "
                          f"WHERE project_id = '{project}'")[0].split("|")
        processed = n2 - n1
        result["process"] = {"backlog": backlog, "processed": processed, "secs": t2 - t1,
                             "events_per_s": processed / (t2 - t1),
                             "first_after_s": t_first - t_start,
                             "worker_cpu_ms_per_event": (w2 - w1) * 1000 / max(processed, 1),
                             "pg_cpu_ms_per_event": (pg2 - pg1) * 1000 / max(processed, 1),
                             "loadavg": open("/proc/loadavg").read().split()[:3],
                             "notifications": int(notes[0]), "recipients": int(notes[1])}
        print(f"process: {result['process']}", file=sys.stderr)
        stop(worker)

        # 4. ingest answer -> notification rows, on an empty backlog
        subprocess.run(args.clean, shell=True, check=True)
        sql.query(f"DELETE FROM job_outbox WHERE project_id = '{project}'")
        sql.query(f"DELETE FROM events WHERE project_id = '{project}' AND processed_at IS NULL")
        sql.query("ANALYZE")
        worker = spawn("worker", [f"{args.bin}/comet-worker"], {"WORKER_PORT": "0"})
        await asyncio.sleep(2.0)
        answered = {}  # event id -> time of the 202

        def on_answer(t, payload):
            answered[json.loads(payload)["data"]["eventId"]] = t

        seen = {}
        stop_poll = False

        async def poller():
            while not stop_poll or len(seen) < len(answered):
                pending = [e for e in answered if e not in seen]
                if pending:
                    ids = ",".join(f"'{e}'" for e in pending)
                    rows = await asyncio.to_thread(
                        sql.query, f"SELECT DISTINCT event_id FROM notifications WHERE project_id = "
                                   f"'{project}' AND event_id IN ({ids})")
                    t = now()
                    for e in rows:
                        seen.setdefault(e, t)
                if stop_poll and now() - t_end > 30:
                    break
                await asyncio.sleep(args.poll_ms / 1000)

        poll = asyncio.create_task(poller())
        t_end = now() + 1e9
        lats, statuses, _ = await open_loop(args.port, headers, args.lat_rate, args.lat_secs, body, 64,
                                            on_answer)
        stop_poll, t_end = True, now()
        await poll
        delays = [(seen[e] - t) * 1000 for e, t in answered.items() if e in seen]
        result["latency"] = dict(summary(delays) if delays else {"n": 0}, offered=args.lat_rate,
                                 secs=args.lat_secs, missing=len(answered) - len(delays),
                                 ingest=summary(lats), statuses=statuses, poll_ms=args.poll_ms)
        print(f"latency: {result['latency']}", file=sys.stderr)
        stop(worker)
    finally:
        for p in procs:
            stop(p)
        sql.close()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
