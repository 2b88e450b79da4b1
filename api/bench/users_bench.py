#!/usr/bin/env python3
"""User-management benchmark driver (run by api/bench/users.sh; Python 3 standard library only).

Runs, against the real release binaries already built and a database already migrated and seeded:
two `comet-api` processes (A and B, different PORTs), one `comet-worker`, and an SMTP sink on
loopback inside this process (so the email's arrival and the HTTP requests are timed on the same
CLOCK_MONOTONIC). Then:

  invite   N invites by the seeded admin on A (CONC in flight), timed from the first request to
           the N-th email accepted by the sink; request latency p50/p99
  deact    REPEATS times: invite, read the token from the email, accept, log in, then a poller
           sends GET /api/v1/users/me with the user's token to B back to back while A deactivates
           the user; delay = first 401 received from B minus A's deactivate answer
  list     (the caller runs oha; see users.sh)

Writes one JSON object with the figures to --out, and the admin's access token to --token-out.
"""
import argparse
import asyncio
import email
import email.policy
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

now = time.monotonic


# ------------------------------------------------------------------------------ SMTP sink --
class Sink:
    """A tiny SMTP server: accepts everything, records (time accepted, recipients, raw data)."""

    def __init__(self):
        self.count = 0
        self.by_rcpt = {}  # address -> (t, data)
        self.waiters = {}  # address -> future
        self.watch = None  # (set of addresses, needed count, future, seen count, last t)

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, r, w):
        w.write(b"220 bench-sink ESMTP\r\n")
        rcpts = []
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                cmd = line.decode("latin-1").strip()
                up = cmd.upper()
                if up.startswith("EHLO"):
                    w.write(b"250-bench-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif up.startswith("HELO"):
                    w.write(b"250 bench-sink\r\n")
                elif up.startswith("MAIL FROM"):
                    rcpts = []
                    w.write(b"250 OK\r\n")
                elif up.startswith("RCPT TO"):
                    m = re.search(r"<([^>]*)>", cmd)
                    rcpts.append((m.group(1) if m else cmd[8:]).strip().lower())
                    w.write(b"250 OK\r\n")
                elif up == "DATA":
                    w.write(b"354 end with <CRLF>.<CRLF>\r\n")
                    await w.drain()
                    chunks = []
                    while True:
                        l = await r.readline()
                        if not l or l in (b".\r\n", b".\n"):
                            break
                        if l.startswith(b".."):
                            l = l[1:]
                        chunks.append(l)
                    t = now()
                    w.write(b"250 OK queued\r\n")
                    self.accepted(t, rcpts, b"".join(chunks))
                    rcpts = []
                elif up in ("RSET", "NOOP"):
                    rcpts = [] if up == "RSET" else rcpts
                    w.write(b"250 OK\r\n")
                elif up == "QUIT":
                    w.write(b"221 bye\r\n")
                    await w.drain()
                    break
                else:
                    w.write(b"502 not implemented\r\n")
                await w.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    def accepted(self, t, rcpts, data):
        self.count += 1
        for a in rcpts:
            self.by_rcpt[a] = (t, data)
            f = self.waiters.pop(a, None)
            if f and not f.done():
                f.set_result((t, data))
            if self.watch and a in self.watch["set"]:
                self.watch["seen"] += 1
                self.watch["last"] = t
                if self.watch["seen"] >= self.watch["need"] and not self.watch["fut"].done():
                    self.watch["fut"].set_result(t)

    async def wait_for(self, addr, timeout=30):
        if addr in self.by_rcpt:
            return self.by_rcpt[addr]
        f = asyncio.get_running_loop().create_future()
        self.waiters[addr] = f
        return await asyncio.wait_for(f, timeout)


def invitation_token(data):
    msg = email.message_from_bytes(data, policy=email.policy.default)
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            m = re.search(r"invitations/accept\?token=([A-Za-z0-9_\-.~%]+)", part.get_content())
            if m:
                return m.group(1)
    raise RuntimeError("no invitation link in the email")


# ---------------------------------------------------------------------------- HTTP client --
class Http:
    """One keep-alive HTTP/1.1 connection (enough for the API's JSON answers)."""

    def __init__(self, port):
        self.port = port
        self.r = self.w = None

    async def request(self, method, path, body=None, token=None):
        if self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        self.w.write(head.encode() + b"\r\n" + data)
        await self.w.drain()
        status = int((await self.r.readline()).split()[1])
        length, chunked, close = 0, False, False
        while True:
            l = await self.r.readline()
            if l in (b"\r\n", b"\n", b""):
                break
            k, _, v = l.decode("latin-1").partition(":")
            k, v = k.strip().lower(), v.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding" and "chunked" in v:
                chunked = True
            elif k == "connection" and v == "close":
                close = True
        if chunked:
            out = b""
            while True:
                n = int((await self.r.readline()).strip(), 16)
                out += await self.r.readexactly(n + 2)
                if n == 0:
                    break
                out = out[:-2]
            payload = out
        else:
            payload = await self.r.readexactly(length)
        if close:
            self.w.close()
            self.r = self.w = None
        return status, payload

    async def json(self, method, path, body=None, token=None, expect=(200,)):
        status, payload = await self.request(method, path, body, token)
        if status not in expect:
            raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
        return json.loads(payload) if payload else None


def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


async def wait_health(port, proc, timeout=60):
    t = now()
    while now() - t < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {proc.returncode}")
        try:
            h = Http(port)
            s, _ = await h.request("GET", "/health")
            h.w.close()
            if s == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no /health on port {port}")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--port-a", type=int, default=18081)
    ap.add_argument("--port-b", type=int, default=18082)
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", required=True)
    ap.add_argument("--token-out", required=True)
    ap.add_argument("--hold", help="after the measurements, keep the APIs up until this file exists")
    args = ap.parse_args()

    sink = Sink()
    await sink.start()
    env = dict(os.environ, SMTP_URL=f"smtp://127.0.0.1:{sink.port}")
    procs = []

    def spawn(name, cmd, extra):
        log = open(os.path.join(args.logs, f"{name}.log"), "w")
        p = subprocess.Popen(cmd, env=dict(env, **extra), stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    result = {}
    try:
        api_a = spawn("api-a", [f"{args.bin}/comet-api", "serve"], {"PORT": str(args.port_a)})
        api_b = spawn("api-b", [f"{args.bin}/comet-api", "serve"], {"PORT": str(args.port_b)})
        worker = spawn("worker", [f"{args.bin}/comet-worker"], {"WORKER_PORT": "0"})
        await wait_health(args.port_a, api_a)
        await wait_health(args.port_b, api_b)
        await asyncio.sleep(1.0)
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}")

        a = Http(args.port_a)
        login = await a.json("POST", "/api/v1/auth/login",
                             {"email": "admin@comet.local", "password": args.admin_password})
        admin = login["data"]["accessToken"]
        with open(args.token_out, "w") as f:
            f.write(admin)
        role_id = os.environ["BENCH_MEMBER_ROLE"]  # the project's "member" role

        # warm-up: one invite end to end (connections, prepared statements, SMTP pool)
        await a.json("POST", "/api/v1/users/invite",
                     {"email": "warmup@bench.test", "roleIds": [role_id]}, admin, expect=(202,))
        await sink.wait_for("warmup@bench.test")

        # ---------------------------------------------------------------- 1. invites --
        n = args.n
        addrs = [f"invitee-{i:05d}@bench.test" for i in range(n)]
        done_fut = asyncio.get_running_loop().create_future()
        sink.watch = {"set": set(addrs), "need": n, "fut": done_fut, "seen": 0, "last": None}
        lat, errors = [], []
        queue = list(reversed(addrs))

        async def inviter():
            h = Http(args.port_a)
            while queue:
                addr = queue.pop()
                t = now()
                s, p = await h.request("POST", "/api/v1/users/invite",
                                       {"email": addr, "roleIds": [role_id]}, admin)
                lat.append(now() - t)
                if s != 202:
                    errors.append((s, p[:200]))

        print(f"invite: {n} invites, {args.conc} in flight", file=sys.stderr)
        t0 = now()
        await asyncio.gather(*(inviter() for _ in range(args.conc)))
        t_answered = now()
        if errors:
            raise RuntimeError(f"{len(errors)} invites failed, e.g. {errors[0]}")
        t_last = await asyncio.wait_for(done_fut, 300)
        sink.watch = None
        result["invite"] = {
            "n": n, "conc": args.conc,
            "seconds_to_last_email": t_last - t0,
            "per_s_end_to_end": n / (t_last - t0),
            "per_s_requests": n / (t_answered - t0),
            "lat_p50_ms": pct(lat, 50) * 1e3, "lat_p99_ms": pct(lat, 99) * 1e3,
            "lat_max_ms": max(lat) * 1e3,
        }
        print(json.dumps(result["invite"]), file=sys.stderr)

        # ----------------------------------------------------------- 2. deactivation --
        delays, from_req, late_ok = [], [], 0
        b = Http(args.port_b)
        for i in range(args.repeats):
            addr = f"deact-{i:03d}@bench.test"
            inv = await a.json("POST", "/api/v1/users/invite", {"email": addr, "roleIds": [role_id]},
                               admin, expect=(202,))
            user_id = inv["data"]["user"]["id"]
            _, data = await sink.wait_for(addr)
            password = "bench-password-0123456789"
            await a.json("POST", "/api/v1/invitations/accept",
                         {"token": invitation_token(data), "password": password})
            tok = (await a.json("POST", "/api/v1/auth/login",
                                {"email": addr, "password": password}))["data"]["accessToken"]
            await b.json("GET", "/api/v1/users/me", token=tok)  # valid on B
            polls = []
            stop = asyncio.Event()

            async def poller():
                h = Http(args.port_b)
                t_end = now() + 10
                while now() < t_end:
                    ts = now()
                    s, _ = await h.request("GET", "/api/v1/users/me", token=tok)
                    polls.append((ts, now(), s))
                    if s == 401:
                        return
                    if s != 200:
                        raise RuntimeError(f"poll on B: {s}")

            task = asyncio.create_task(poller())
            await asyncio.sleep(0.05)
            t_req = now()
            await a.json("POST", f"/api/v1/users/{user_id}/deactivate", token=admin)
            t_ans = now()
            await task
            first = next((p for p in polls if p[2] == 401), None)
            if first is None:
                raise RuntimeError(f"B never refused the token of {addr} within 10 s")
            delays.append(first[1] - t_ans)
            from_req.append(first[1] - t_req)
            late_ok += sum(1 for p in polls if p[2] == 200 and p[0] >= t_ans)
        result["deact"] = {
            "repeats": args.repeats,
            "p50_ms": pct(delays, 50) * 1e3, "max_ms": max(delays) * 1e3,
            "min_ms": min(delays) * 1e3,
            "from_request_p50_ms": pct(from_req, 50) * 1e3, "from_request_max_ms": max(from_req) * 1e3,
            "ok_sent_after_answer": late_ok,
        }
        print(json.dumps(result["deact"]), file=sys.stderr)
        with open(args.out, "w") as f:
            json.dump(result, f)
        if args.hold:
            print("READY", file=sys.stderr, flush=True)
            while not os.path.exists(args.hold):
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{p.args[0]} exited with {p.returncode}")
                await asyncio.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    asyncio.run(main())
