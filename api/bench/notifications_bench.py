#!/usr/bin/env python3
"""Notifications benchmark driver (run by api/bench/notifications.sh; Python 3 standard library).

Against the release binaries and a database already migrated, with a project, its API key, its
users (each with a token), roles, rules and webhook endpoints made by notifications.sh, it runs
two `comet-api` processes (A and B) and one `comet-worker`, and measures:

  memory    API A's RSS with 0 open streams, then with --mem-streams streams open on it (every
            user opens --mem-streams/users streams: token -> ticket -> stream), per stream
  live      every user opens one stream (token -> POST stream-ticket -> GET stream?ticket=),
            even users on A, odd users on B; events are posted open loop (alternating A and B)
            at --low-rate/s, then at --rate/s, for --secs s each; an event of type bench.g<k>
            matches the rule of group k (inApp) whose role holds --group users. Per (event,
            recipient): from the event's 202 to the stream's `notification` carrying its
            eventId. Counts what arrived within --drain s after the last post.
  webhook   the worker stopped; --wh-n events of type hook.fired (batches of 1000) whose rule's
            channel is webhook; a worker running only process_event turns them into
            notifications and deliver_notification jobs; then one worker running only
            deliver_notification delivers them to a local receiver answering 204 at once.
            Deliveries per second counted by the receiver.

The SSE clients and the event poster are `comet-bench sse` and `comet-bench post` (Rust,
`worker/src/bin/comet-bench/live.rs`; `--driver python`: this script's asyncio ones, children
of it by `--role sse`); the webhook receiver is a child of this script (`--role hook`); all on
the same monotonic clock. Writes one JSON object with the figures to --out.
"""
import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from users_bench import pct, wait_health  # noqa: E402

now = time.monotonic
EVENT_ID = re.compile(rb'"eventId":"([0-9a-f-]{36})"')


def rnd(v):
    return None if v is None else round(v, 2)


class Conn:
    """One keep-alive HTTP/1.1 connection (enough for the API's JSON answers)."""

    def __init__(self, port, headers):
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.r = self.w = None

    async def request(self, method, path, body=b"", head=""):
        if self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        self.w.write((f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      f"{self.head}{head}Content-Length: {len(body)}\r\n\r\n").encode() + body)
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


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def pg_cpu(db):
    """CPU seconds used so far by the Postgres backends serving database `db` (not the server's
    shared processes, nor other databases' backends; a backend that exited is not counted)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    cmd = f.read()
                if cmd.startswith("postgres: ") and f" {db} " in cmd:
                    total += cpu_secs(pid)
            except (OSError, IndexError):
                pass
    return total


# ---------------------------------------------------------------- SSE clients (child process)

async def sse_client(port, token, per_user_ix, stats, got, stop):
    """One user's stream: ticket, stream, reconnect with Last-Event-ID when it ends."""
    api = Conn(port, {"Authorization": f"Bearer {token}"})
    last = None
    while not stop.is_set():
        status, body = await api.request("POST", "/api/v1/notifications/stream-ticket")
        if status != 200:
            stats["ticket_errors"] += 1
            await asyncio.sleep(0.2)
            continue
        ticket = json.loads(body)["data"]["ticket"]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write((f"GET /api/v1/notifications/stream?ticket={ticket} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Accept: text/event-stream\r\n"
                 + (f"Last-Event-ID: {last}\r\n" if last is not None else "") + "\r\n").encode())
        status = int((await r.readline()).split()[1])
        chunked = False
        while True:
            line = await r.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        if status != 200:
            stats["stream_errors"] += 1
            w.close()
            await asyncio.sleep(0.2)
            continue
        stats["open"] += 1
        buf = b""
        try:
            while True:
                if chunked:
                    size = int((await r.readline()).split(b";")[0], 16)
                    if size == 0:
                        break
                    data = await r.readexactly(size + 2)
                    data = data[:-2]
                else:
                    data = await r.read(65536)
                    if not data:
                        break
                t = now()
                buf += data
                *events, buf = buf.split(b"\n\n")
                for ev in events:
                    if b"event: notification" not in ev and b"event:notification" not in ev:
                        continue
                    m = EVENT_ID.search(ev)
                    if m:
                        got.append((m.group(1).decode(), per_user_ix, t))
                    for ln in ev.split(b"\n"):
                        if ln.startswith(b"id:"):
                            last = int(ln[3:].strip())
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        stats["open"] -= 1
        w.close()
        if not stop.is_set():
            stats["reconnects"] += 1


async def sse_role(args):
    users = [json.loads(x) for x in open(args.users)]
    stats = {"open": 0, "reconnects": 0, "ticket_errors": 0, "stream_errors": 0}
    got, stop = [], asyncio.Event()
    tasks = []
    for u in users:
        for k in range(args.per_user):
            tasks.append(asyncio.create_task(sse_client(args.port, u["token"], u["ix"], stats, got, stop)))
            await asyncio.sleep(0.002)
    want, t0 = len(tasks), now()
    while stats["open"] < want and now() - t0 < 60:
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": stats["open"], "wanted": want}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), 0.25)
        except asyncio.TimeoutError:
            print(json.dumps({"n": len(got)}), flush=True)
            continue
        if line.strip() in (b"stop", b""):
            break
    stop.set()
    with open(args.out, "w") as f:
        json.dump({"got": got, "stats": stats}, f)
    os._exit(0)


# ---------------------------------------------------------------- webhook receiver (child)

class Hook(asyncio.Protocol):
    counts = {}

    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            n = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(self.buf) < end + 4 + n:
                return
            self.buf = self.buf[end + 4 + n:]
            sec = int(now() * 10)
            Hook.counts[sec] = Hook.counts.get(sec, 0) + 1
            self.t.write(b"HTTP/1.1 204 No Content\r\n\r\n")


async def hook_role(args):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Hook, "127.0.0.1", args.port, backlog=1024)
    print(json.dumps({"ready": args.port}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), 0.5)
        except asyncio.TimeoutError:
            print(json.dumps({"n": sum(Hook.counts.values())}), flush=True)
            continue
        if line.strip() in (b"stop", b""):
            break
    server.close()
    with open(args.out, "w") as f:
        json.dump(sorted(Hook.counts.items()), f)
    os._exit(0)


# ---------------------------------------------------------------- the driver

class Child:
    """A child role of this script, driven by lines on stdin/stdout."""

    def __init__(self, argv):
        self.p = None
        self.argv = argv
        self.last = {}

    async def start(self):
        self.p = await asyncio.create_subprocess_exec(*self.argv, stdin=subprocess.PIPE,
                                                      stdout=subprocess.PIPE)
        while "ready" not in self.last:
            line = await self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"child {self.argv[1:]} ended before ready")
            self.last = json.loads(line)
        asyncio.create_task(self.pump())
        return self

    async def pump(self):
        while True:
            line = await self.p.stdout.readline()
            if not line:
                return
            self.last = json.loads(line)

    async def stop(self):
        self.p.stdin.write(b"stop\n")
        await self.p.stdin.drain()
        await self.p.wait()


def sse_child(a, port, users, per_user, out):
    """SSE clients for the users in the file: `comet-bench sse` (Rust; --driver python: this
    script's asyncio clients)."""
    args = ["--port", str(port), "--users", users, "--per-user", str(per_user), "--out", out]
    if a.driver == "python":
        return Child([sys.executable, os.path.abspath(__file__), "--role", "sse"] + args)
    return Child([os.path.join(a.bin, "comet-bench"), "sse"] + args)


def spawn(a, name, port, extra):
    """Starts comet-api (name api-*) or comet-worker with the bench's environment plus extra."""
    env = dict(os.environ, **extra, PORT=str(port))
    log = open(os.path.join(a.logs, f"{name}.log"), "a")
    argv = [os.path.join(a.bin, "comet-api"), "serve"] if name.startswith("api") else \
        [os.path.join(a.bin, "comet-worker")]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_proc(p):
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


async def post_open_loop(ports, key, rate, secs, groups, sent):
    """Posts one event per 1/rate s, alternating ports; sent[event_id] = (t_202, group)."""
    pools = {p: [Conn(p, {"X-API-Key": key}) for _ in range(128)] for p in ports}
    idle = {p: asyncio.Queue() for p in ports}
    for p in ports:
        for c in pools[p]:
            idle[p].put_nowait(c)
    lats, statuses = [], {}

    async def one(i, due):
        p = ports[i % len(ports)]
        g = i % groups
        c = await idle[p].get()
        body = json.dumps({"type": f"bench.g{g}", "source": "bench", "payload": {"n": i}}).encode()
        try:
            st, payload = await c.request("POST", "/api/v1/events", body)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            c.close()
            st, payload = 0, b""
        t = now()
        idle[p].put_nowait(c)
        statuses[st] = statuses.get(st, 0) + 1
        lats.append((t - due) * 1000)
        if st == 202:
            sent[EVENT_ID.search(payload).group(1).decode()] = (t, g)

    tasks, n, t0 = [], int(rate * secs), now() + 0.05
    for i in range(n):
        due = t0 + i / rate
        d = due - now()
        if d > 0:
            await asyncio.sleep(d)
        tasks.append(asyncio.create_task(one(i, due)))
    t_last_due = now()
    await asyncio.gather(*tasks)
    for p in ports:
        for c in pools[p]:
            c.close()
    return {"n": n, "statuses": statuses, "achieved_per_s": round(n / (now() - t0), 1),
            "post_p50_ms": rnd(pct(lats, 50)), "post_p99_ms": rnd(pct(lats, 99)), "t_last_due": t_last_due}


async def live_phase(a, clients, rate, group_of, groups):
    sent = {}
    base = sum(c.last.get("n", 0) for c in clients)
    if a.driver == "python":
        post = await post_open_loop([a.port_a, a.port_b], a.api_key, rate, a.secs, groups, sent)
    else:
        out = os.path.join(a.logs, f"post-{int(rate)}.json")
        p = await asyncio.create_subprocess_exec(
            os.path.join(a.bin, "comet-bench"), "post", "--port", str(a.port_a), "--port",
            str(a.port_b), "--api-key", a.api_key, "--rate", str(int(rate)), "--secs",
            str(int(a.secs)), "--groups", str(groups), "--out", out)
        if await p.wait() != 0:
            raise RuntimeError("comet-bench post failed")
        post = json.load(open(out))
        for eid, t, g in post.pop("sent"):
            sent[eid] = (t, g)
    expected = sum(a.group for _ in sent)
    t_end = now() + a.drain
    while now() < t_end and sum(c.last.get("n", 0) for c in clients) - base < expected:
        await asyncio.sleep(0.25)
    post["drain_s"] = round(now() - post.pop("t_last_due"), 1)
    return sent, expected, post


def latencies(sent, got, group_of):
    lats, seen = [], set()
    for eid, ix, t in got:
        s = sent.get(eid)
        if s and group_of[ix] == s[1] and (eid, ix) not in seen:
            seen.add((eid, ix))
            lats.append((t - s[0]) * 1000)
    return lats


STAGES_SQL = """
WITH ev AS (SELECT event_id, job_id, received_at, processed_at,
                   row_number() OVER (ORDER BY received_at) rn
            FROM events WHERE type LIKE 'bench.g%%' AND source IS DISTINCT FROM 'history'),
d AS (SELECT ev.rn, ev.received_at, ev.processed_at, j.created_at AS queued, j.started_at
      FROM ev LEFT JOIN job_archive j ON j.job_id = ev.job_id)
SELECT rn <= %d, count(*), count(queued),
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms(processed_at - received_at))),
  round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms(processed_at - received_at))),
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms(queued - received_at))),
  round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms(queued - received_at))),
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms(started_at - queued))),
  round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms(started_at - queued))),
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms(processed_at - started_at))),
  round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms(processed_at - started_at)))
FROM d GROUP BY 1
"""


def stages(db, first_n, wait_s=20.0):
    """Per phase, from the rows' own clocks, p50/p99 ms: ingest (the event's received_at) ->
    process_event's transaction (processed_at), and its parts from the job's record in
    job_archive: -> the job pushed to Redis by the outbox relay (created_at), -> the worker's
    start (started_at), -> the transaction (processed_at: the batched read and the wait for the
    writer). Waits up to wait_s for the archiver to have moved every phase's job."""
    sql = ("CREATE OR REPLACE FUNCTION pg_temp.ms(i interval) RETURNS numeric LANGUAGE sql AS "
           "'SELECT (extract(epoch FROM i) * 1000)::numeric';" + STAGES_SQL.replace("ms(", "pg_temp.ms(") % first_n)
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.check_output(["psql", "-X", "-w", "-Atq", "-F", " ", "-c", sql, db], text=True)
        rows = [line.split() for line in out.strip().splitlines()]
        if all(v[1] == v[2] for v in rows) or time.monotonic() > deadline:
            break
        time.sleep(1)
    res = {}
    for v in rows:
        num = lambda x: float(x) if x else None
        res["low" if v[0] == "t" else "high"] = {
            "events": int(v[1]), "jobs_found": int(v[2]),
            "process_p50_ms": num(v[3]), "process_p99_ms": num(v[4]),
            "queued_p50_ms": num(v[5]), "queued_p99_ms": num(v[6]),
            "started_p50_ms": num(v[7]), "started_p99_ms": num(v[8]),
            "tx_p50_ms": num(v[9]), "tx_p99_ms": num(v[10])}
    return res


async def main_role(a):
    users = [json.loads(x) for x in open(a.users)]
    group_of = {u["ix"]: u["group"] for u in users}
    groups = max(group_of.values()) + 1
    res = {"users": len(users), "groups": groups, "group": a.group}
    dbname = a.db.rsplit("/", 1)[1].split("?")[0]
    common = {"WEBHOOK_ALLOW_PRIVATE": "true"}
    api_a = spawn(a, "api-a", a.port_a, common)
    api_b = spawn(a, "api-b", a.port_b, common)
    await wait_health(a.port_a, api_a)
    await wait_health(a.port_b, api_b)

    # memory: A's RSS with no stream, then with mem_streams streams on it
    files = {}
    for side, mod in (("a", 0), ("b", 1)):
        files[side] = os.path.join(a.logs, f"users-{side}.jsonl")
        with open(files[side], "w") as f:
            for u in users:
                if u["ix"] % 2 == mod:
                    f.write(json.dumps(u) + "\n")
    allf = os.path.join(a.logs, "users-all.jsonl")
    with open(allf, "w") as f:
        for u in users:
            f.write(json.dumps(u) + "\n")
    # warm A: a ticket and a short stream through every code path once
    warm = await sse_child(a, a.port_a, files["a"], 1, os.path.join(a.logs, "warm.json")).start()
    await warm.stop()
    await asyncio.sleep(2)
    rss0 = rss_kib(api_a.pid)
    per_user = max(1, a.mem_streams // len(users))
    mem = await sse_child(a, a.port_a, allf, per_user, os.path.join(a.logs, "mem.json")).start()
    await asyncio.sleep(3)
    rss1 = rss_kib(api_a.pid)
    await mem.stop()
    await asyncio.sleep(2)
    res["memory"] = {"streams": per_user * len(users), "rss0_kib": rss0, "rss1_kib": rss1,
                     "rss_after_close_kib": rss_kib(api_a.pid),
                     "per_stream_kib": round((rss1 - rss0) / (per_user * len(users)), 1)}
    print(f"memory: {res['memory']}", file=sys.stderr)

    # live: one stream per user, even users on A and odd on B
    worker = spawn(a, "worker", 0, common)
    await asyncio.sleep(1)
    # history: the tables of a deployment that has been running (HISTORY events of the live
    # phases' types, processed and delivered), then ANALYZE, as autovacuum does in a
    # deployment (it is off on this machine's server); without it the timed phases would
    # measure a new database whose cached plans were made on empty tables (BENCHMARKS.md,
    # "Notifications"). The history gets at most --wh-prep-timeout seconds.
    if a.history:
        c = Conn(a.port_a, {"X-API-Key": a.api_key})
        t0 = now()

        async def settle():
            while True:
                left = int(subprocess.check_output(
                    ["psql", "-X", "-w", "-Atqc",
                     "SELECT count(*) FROM events WHERE processed_at IS NULL", a.db]).strip())
                if left == 0 or now() - t0 > a.wh_prep_timeout:
                    return left
                await asyncio.sleep(0.5)

        for i in range(0, a.history, 1000):
            evs = [{"type": f"bench.g{j % groups}", "source": "history", "payload": {"n": j}}
                   for j in range(i, min(a.history, i + 1000))]
            st, body = await c.request("POST", "/api/v1/events/batch",
                                       json.dumps({"events": evs}).encode())
            assert st == 202, body[:300]
            if i == 0:
                # the first thousand processed, then ANALYZE, as autovacuum does once a table
                # grows: the rest is processed with plans made on tables that have rows
                await settle()
                subprocess.check_output(["psql", "-X", "-w", "-Atqc", "ANALYZE", a.db])
        c.close()
        left = await settle()
        # and archived: the worker's archiver copies finished jobs to Postgres every 500 ms,
        # and a backlog of them would still be written during the live phases
        while now() - t0 < a.wh_prep_timeout:
            archived = int(subprocess.check_output(
                ["psql", "-X", "-w", "-Atqc",
                 "SELECT count(*) FROM job_archive WHERE queue = 'process_event'", a.db]).strip())
            if archived >= a.history - left:
                break
            await asyncio.sleep(0.5)
        subprocess.check_output(["psql", "-X", "-w", "-Atqc", "ANALYZE", a.db])
        res["history"] = {"events": a.history, "unprocessed": left, "secs": round(now() - t0, 1)}
        print(f"history: {res['history']}", file=sys.stderr)
        await asyncio.sleep(1)
    clients = []
    for side, port in (("a", a.port_a), ("b", a.port_b)):
        clients.append(await sse_child(a, port, files[side], 1,
                                       os.path.join(a.logs, f"sse-{side}.json")).start())
    phases = []
    for rate in (a.low_rate, a.rate):
        cpu0 = {n: cpu_secs(p.pid) for n, p in (("api_a", api_a), ("api_b", api_b), ("worker", worker))}
        cpu0["postgres"] = pg_cpu(dbname)
        la0 = os.getloadavg()
        sent, expected, post = await live_phase(a, clients, rate, group_of, groups)
        cpu = {n: round(cpu_secs(p.pid) - cpu0[n], 1)
               for n, p in (("api_a", api_a), ("api_b", api_b), ("worker", worker))}
        cpu["postgres"] = round(pg_cpu(dbname) - cpu0["postgres"], 1)
        phases.append({"rate": rate, "sent": sent, "expected": expected, "post": post, "cpu_s": cpu,
                       "load_before": la0, "load_after": os.getloadavg()})
        print(f"live {rate}/s: posted {post}, expected {expected}", file=sys.stderr)
        await asyncio.sleep(1)
    got, stats = [], []
    for c in clients:
        await c.stop()
    for side in ("a", "b"):
        d = json.load(open(os.path.join(a.logs, f"sse-{side}.json")))
        got += d["got"]
        stats.append(d["stats"])
    res["live"] = []
    for ph in phases:
        lats = latencies(ph.pop("sent"), got, group_of)
        ph.update({"arrived": len(lats), "p50_ms": rnd(pct(lats, 50)), "p99_ms": rnd(pct(lats, 99)),
                   "max_ms": round(max(lats), 1) if lats else None})
        res["live"].append(ph)
    res["sse_stats"] = stats
    try:
        st = stages(a.db, phases and res["live"][0]["post"]["n"])
        for key, ph in zip(("low", "high"), res["live"]):
            ph["stages"] = st.get(key)
    except (subprocess.CalledProcessError, ValueError, IndexError) as e:
        print(f"stages: {e}", file=sys.stderr)
    stop_proc(worker)

    # webhook: a backlog of webhook deliveries, then one worker delivering it
    hook = await Child([sys.executable, os.path.abspath(__file__), "--role", "hook", "--port",
                        str(a.hook_port), "--out", os.path.join(a.logs, "hook.json")]).start()
    c = Conn(a.port_a, {"X-API-Key": a.api_key})
    t0 = now()
    for i in range(0, a.wh_n, 1000):
        evs = [{"type": "hook.fired", "source": "bench", "payload": {"n": j}}
               for j in range(i, min(a.wh_n, i + 1000))]
        st, body = await c.request("POST", "/api/v1/events/batch", json.dumps({"events": evs}).encode())
        assert st == 202, body[:300]
    c.close()
    ingest_s = now() - t0
    pe = spawn(a, "worker", 0, dict(common, WORKER_QUEUES="process_event"))
    t0 = now()
    while True:
        n = int(subprocess.check_output(["psql", "-X", "-w", "-Atqc",
                                         "SELECT count(*) FROM events WHERE type = 'hook.fired'"
                                         " AND processed_at IS NOT NULL", a.db]).strip())
        if n >= a.wh_n or now() - t0 > a.wh_prep_timeout:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(3)  # the relay moves the last delivery jobs into Redis
    stop_proc(pe)
    prep = {"events": a.wh_n, "ingest_s": round(ingest_s, 1), "processed": n,
            "process_s": round(now() - t0, 1)}
    print(f"webhook backlog: {prep}", file=sys.stderr)
    base = hook.last.get("n", 0)
    wk = spawn(a, "worker", 0, dict(common, WORKER_QUEUES="deliver_notification"))
    cpu0, pg0 = cpu_secs(wk.pid), pg_cpu(dbname)
    perf = None
    if os.environ.get("PERF") == "1":  # a CPU profile of the delivering worker
        perf = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-g", "-p", str(wk.pid), "-o",
                                 os.path.join(a.logs, "perf-webhook-worker.data")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, last_n, last_change = now(), base, now()
    want = n * a.endpoints
    while now() - t0 < a.wh_timeout:
        await asyncio.sleep(0.5)
        cur = hook.last.get("n", 0)
        if cur != last_n:
            last_n, last_change = cur, now()
        if cur - base >= want or (cur > base and now() - last_change > 5):
            break
    wcpu, pgcpu, wall = cpu_secs(wk.pid) - cpu0, pg_cpu(dbname) - pg0, now() - t0
    if perf:
        perf.send_signal(2)
        perf.wait()
    stop_proc(wk)
    await hook.stop()
    buckets = json.load(open(os.path.join(a.logs, "hook.json")))
    ok = int(subprocess.check_output(["psql", "-X", "-w", "-Atqc",
                                      "SELECT count(*) FROM delivery_attempts WHERE channel = 'webhook'"
                                      " AND outcome = 'ok'", a.db]).strip() or 0)
    total = sum(v for _, v in buckets)
    if buckets:
        first, last = buckets[0][0], buckets[-1][0]
        span = (last - first + 1) / 10
        # steady state: the whole seconds after the first one
        per_s = {}
        for b, v in buckets:
            per_s[b // 10] = per_s.get(b // 10, 0) + v
        secs = sorted(per_s)
        steady = [per_s[s] for s in secs[1:-1]] or [per_s[s] for s in secs]
    else:
        span, steady = 0, []
    res["webhook"] = dict(prep, endpoints=a.endpoints, expected=want, received=total,
                          attempts_ok=ok, span_s=round(span, 2),
                          mean_per_s=round(total / span, 0) if span else 0,
                          steady_per_s=round(sum(steady) / len(steady), 0) if steady else 0,
                          peak_per_s=max(steady) if steady else 0, worker_cpu_s=round(wcpu, 1),
                          postgres_cpu_s=round(pgcpu, 1), wall_s=round(wall, 1))
    print(f"webhook: {res['webhook']}", file=sys.stderr)
    stop_proc(api_a)
    stop_proc(api_b)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main")
    ap.add_argument("--port", type=int)
    ap.add_argument("--users")
    ap.add_argument("--per-user", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--bin")
    ap.add_argument("--logs")
    ap.add_argument("--db")
    ap.add_argument("--api-key")
    ap.add_argument("--port-a", type=int, default=18101)
    ap.add_argument("--port-b", type=int, default=18102)
    ap.add_argument("--hook-port", type=int, default=18103)
    ap.add_argument("--group", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--low-rate", type=float, default=100)
    ap.add_argument("--secs", type=float, default=10)
    ap.add_argument("--drain", type=float, default=60)
    ap.add_argument("--mem-streams", type=int, default=1000)
    ap.add_argument("--wh-n", type=int, default=20000)
    ap.add_argument("--history", type=int, default=20000)
    ap.add_argument("--endpoints", type=int, default=1)
    ap.add_argument("--wh-prep-timeout", type=float, default=180)
    ap.add_argument("--wh-timeout", type=float, default=120)
    ap.add_argument("--driver", choices=("rust", "python"), default="rust")
    a = ap.parse_args()
    role = {"main": main_role, "sse": sse_role, "hook": hook_role}[a.role]
    asyncio.run(role(a))


if __name__ == "__main__":
    main()
