#!/usr/bin/env python3
"""Job search benchmark driver (run by api/bench/job_search.sh; Python 3 standard library only).

Subcommands:
  dead     the dead jobs' errors: N rows `n,queue,last_error,fingerprint` (CSV, for \\copy) from
           50 error templates whose ids, numbers, addresses and quoted values vary; the
           fingerprint is computed by `fingerprint()` below, a line-by-line port of
           shared/src/queue/fingerprint.rs (checked against that file's own test cases on every
           run). Writes a meta JSON: the search texts and how many dead rows each matches.
  latency  one keep-alive connection, requests one after another: WARMUP untimed, then REQS
           timed (send to last body byte) for each case of a JSON spec; writes p50/p95/p99/max.
  enqueue  N `POST /api/v1/jobs/ping` over PROCS processes (one keep-alive connection each),
           tokens taken in turn from a file (one project's token a line).
  follow   samples, every INTERVAL s, the archive's `ping` rows (psql), the Redis archive
           backlog and open jobs (redis-cli) and the worker's comet_archive_backlog gauge, until
           N rows are archived; writes the samples and the figures.
"""
import argparse
import csv
import http.client
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

# --------------------------------------------------------------------- fingerprint (port) --
MAX_LEN = 300


def _is_hexish(chars):
    return bool(chars) and all(c in "0123456789abcdefABCDEF" for c in chars)


def _ascii_alnum(c):
    return c.isascii() and c.isalnum()


def _mask_word(word):
    if "@" in word and "." in word and not word.startswith("@"):
        return "<email>"
    hexd = sum(1 for c in word if c in "0123456789abcdefABCDEF")
    has_digit = any(c in "0123456789" for c in word)
    id_like = all(c in "0123456789abcdefABCDEF-:" for c in word)
    if has_digit and id_like and hexd >= 8:
        return "<id>"
    out, in_number = [], False
    for k, c in enumerate(word):
        inner = c in ".," and k + 1 < len(word) and word[k + 1] in "0123456789"
        if c in "0123456789" or (in_number and inner):
            if not in_number:
                out.append("<n>")
                in_number = True
        else:
            in_number = False
            out.append(c)
    return "".join(out)


def fingerprint(error):
    out = ""
    chars = list(error)
    i = 0
    while i < len(chars) and len(out) < MAX_LEN:
        c = chars[i]
        if c in "\"'`":
            try:
                end = chars[i + 1:].index(c)
                out += "'?'"
                i += end + 2
                continue
            except ValueError:
                pass
        if c.isspace():
            if not out.endswith(" "):
                out += " "
            i += 1
            continue
        if _ascii_alnum(c) or c in "_-.@+":
            start = i
            while i < len(chars) and (_ascii_alnum(chars[i]) or chars[i] in "_-.@+:") and \
                    (chars[i] != ":" or _is_hexish(chars[start:i])):
                i += 1
            while i > start + 1 and chars[i - 1] in ".:-":
                i -= 1
            word = "".join(chars[start:i])
            out += _mask_word(word)
            if i == start:
                out += c
                i += 1
            continue
        out += c
        i += 1
    return out.strip()[:MAX_LEN]


def check_fingerprint_port():
    """The cases of shared/src/queue/fingerprint.rs's tests and doc example."""
    cases = {
        "SMTP 550 for bob@example.com: mailbox 'bob' unknown": "SMTP <n> for <email>: mailbox '?' unknown",
        "job 0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b timed out after 30.5s": "job <id> timed out after <n>s",
        'row 42: "x@y" is not an email': "row <n>: '?' is not an email",
        "hash deadbeefcafe1234 mismatch": "hash <id> mismatch",
        "  a \n\t b ": "a b",
        "it's": "it's",
        "no route to mx3.host": "no route to mx<n>.host",
        "took 1.5 s": "took <n> s",
    }
    for text, want in cases.items():
        got = fingerprint(text)
        assert got == want, f"fingerprint port: {text!r} gave {got!r}, want {want!r}"
    pairs = [("webhook 7f0c2a1e-1b2c-4d5e-8f90-123456789abc answered 503 after 1500ms",
              "webhook 0b1c2d3e-aaaa-4bbb-8ccc-dddddddddddd answered 502 after 20ms", True),
             ("webhook https://h/1 answered 503 in 1200ms", "webhook https://h/2 answered 502 in 80ms", True),
             ("webhook https://h/1 answered 503 in 1200ms", "webhook https://h/2 refused the connection", False)]
    for a, b, same in pairs:
        assert (fingerprint(a) == fingerprint(b)) == same, f"fingerprint port: {a!r} vs {b!r}"
    assert len(fingerprint("x " * 10_000)) <= MAX_LEN


# --------------------------------------------------------------------------- the errors --
def templates(r):
    """(queue, make) for 50 error templates; make() gives one occurrence."""
    u = lambda: str(uuid.UUID(int=r.getrandbits(128), version=4))
    n = lambda a, b: r.randint(a, b)
    hx = lambda k: "".join(r.choice("0123456789abcdef") for _ in range(k))
    host = lambda: r.choice(["hooks.acme.io", "api.globex.com", "notify.initech.net", "edge.umbrella.dev",
                             "in.hooli.xyz"])
    email = lambda: f"{r.choice(['ann', 'bob', 'cy', 'dee', 'eve', 'fay'])}{n(1, 99999)}@" + \
        r.choice(["example.com", "mail.test", "corp.example.org"])
    ip = lambda: f"10.{n(0, 255)}.{n(0, 255)}.{n(1, 254)}"
    word = lambda: r.choice(["amount", "user.tier", "country", "items", "score", "plan"])
    DN, PE, SI, PR, BI, PG, RD, BM = ("deliver_notification", "process_event", "send_invitation",
                                      "send_password_reset", "bulk_import", "ping", "rule_digest",
                                      "bucket_monitor")
    return [
        (DN, lambda: f"webhook {u()} answered 503 after {n(100, 30000)}ms"),
        (DN, lambda: f"webhook {u()} answered 410 Gone: endpoint removed"),
        (DN, lambda: f"webhook https://{host()}/in/{n(1, 999)} refused the connection (ECONNREFUSED {ip()}:443)"),
        (DN, lambda: f"SMTP 550 for '{email()}': mailbox unknown"),
        (DN, lambda: f"SMTP 421 from mx{n(1, 9)}.{host()}: too many connections, try later"),
        (DN, lambda: f"SMTP 552 for {email()}: mailbox full ({n(1, 900)} MB over quota)"),
        (DN, lambda: f"TLS handshake with {host()} failed: certificate expired on 2026-{n(1, 12):02}-{n(1, 28):02}"),
        (DN, lambda: f"DNS lookup of in{n(1, 99)}.{host()} failed: NXDOMAIN"),
        (DN, lambda: f"webhook {u()} timed out after {n(5, 30)}s"),
        (DN, lambda: f"webhook signature rejected by {host()} (HTTP 401, request {u()})"),
        (DN, lambda: f"push token {hx(64)} is no longer registered (APNs 410)"),
        (DN, lambda: f"FCM answered 429 Too Many Requests; retry-after {n(1, 600)}s"),
        (DN, lambda: f"SMS to +{n(10**10, 10**11)} rejected by carrier: code {n(1, 99)}"),
        (DN, lambda: f"template 'digest_{n(1, 40)}' not found for locale {r.choice(['fr', 'de', 'pt-BR', 'ja'])}"),
        (DN, lambda: f"recipient {u()} has no verified channel"),
        (PE, lambda: f"rule {u()} failed: condition references unknown field '{word()}'"),
        (PE, lambda: f"event {u()} payload exceeds {n(65536, 1 << 20)} bytes"),
        (PE, lambda: f"timeout after {n(5, 60)}s talking to db-{n(1, 8)}"),
        (PE, lambda: f"deadlock detected while updating rule_state for rule {u()}"),
        (PE, lambda: f"could not serialize access due to concurrent update (event {u()})"),
        (PE, lambda: f"JSON path '$.{word()}' is not a number in event {u()}"),
        (PE, lambda: f"rule {u()} loops: {n(100, 9000)} notifications in {n(1, 60)}s"),
        (PE, lambda: f"project {u()} is suspended"),
        (PE, lambda: f"unknown event type 'order.{r.choice(['paid', 'shipped', 'lost', 'held'])}{n(1, 9)}'"),
        (PE, lambda: f"Redis READONLY You can't write against a read only replica ({ip()}:6379)"),
        (SI, lambda: f"SMTP 550 5.1.1 <{email()}>: Recipient address rejected: User unknown in virtual mailbox table"),
        (SI, lambda: f"SMTP 554 5.7.1 message rejected as spam (score {n(5, 30)}.{n(0, 9)})"),
        (SI, lambda: f"invitation {u()} expired before delivery"),
        (SI, lambda: f"domain d{n(1, 9999)}.example.net is not in ALLOWED_INVITE_DOMAINS"),
        (SI, lambda: f"connection reset by peer while sending DATA to smtp-{n(1, 12)}.mail.internal"),
        (PR, lambda: f"user {u()} was deleted before the reset email was sent"),
        (PR, lambda: f"rate limited by provider: {n(100, 5000)} messages in {n(1, 60)}s"),
        (PR, lambda: f"SMTP AUTH failed for user 'relay{n(1, 20)}': 535 authentication credentials invalid"),
        (BI, lambda: f"import {u()}: row {n(2, 10**6)}: invalid email \"{email()}\""),
        (BI, lambda: f"import {u()}: file is not a valid XLSX (zip central directory missing)"),
        (BI, lambda: f"import {u()}: object store answered 403 for key uploads/{hx(24)}.csv"),
        (BI, lambda: f"import {u()}: more than {n(1, 5) * 10**6} rows"),
        (PG, lambda: "ping asked to fail permanently"),
        (PG, lambda: f"ping asked to fail attempts 1..={n(5, 9)} (this is attempt {n(1, 5)})"),
        (PG, lambda: f"job timed out after {n(30, 90)}s (attempt {n(1, 5)} of 5)"),
        (PG, lambda: f"worker node-{n(1, 40)} lost its lease (heartbeat {n(100, 20000)}ms late)"),
        (PG, lambda: f"panic in handler: index out of bounds: the len is {n(0, 9)} but the index is {n(10, 99)}"),
        (RD, lambda: f"digest for rule {u()}: {n(1, 500)} recipients unreachable"),
        (BM, lambda: f"bucket b{n(1, 500)} of project {u()} is over its limit ({n(1001, 9999)} > 1000)"),
        (BM, lambda: f"S3 SlowDown: reduce your request rate (request id {hx(16).upper()})"),
        (BM, lambda: f"pool timed out while waiting for an open connection ({n(10, 100)} in use)"),
        (RD, lambda: f"HTTP 502 Bad Gateway from https://{host()}/v{n(1, 3)}/digest"),
        (RD, lambda: f"x509: certificate signed by unknown authority ({host()})"),
        (BM, lambda: f"out of memory: allocation of {n(10**6, 10**9)} bytes failed"),
        (DN, lambda: f"upstream {host()} closed the stream: GOAWAY code {n(0, 13)}"),
    ]


def cmd_dead(a):
    check_fingerprint_port()
    r = random.Random(a.seed)
    ts = templates(r)
    assert len(ts) == 50
    rows = []
    for k in range(a.n):
        queue, make = ts[k % len(ts)]
        err = make()
        rows.append((k, queue, err, fingerprint(err)))
    with open(a.out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    # the search texts: ~200 rows (one template's words), ~1 row (an id in one error), none,
    # and a broad one (several templates)
    rare_row = rows[a.n // 2 + 1]  # a `webhook <uuid> answered 410` row (k % 50 == 1)
    rare = rare_row[2].split()[1][:18]
    texts = {"common": "mailbox unknown", "rare": rare, "none": "kafka rebalance in progress",
             "broad": "timed out"}
    meta = {"n": a.n, "templates": len(ts), "fingerprints": len({x[3] for x in rows}),
            "template_fingerprint_pairs": len({(x[0] % len(ts), x[3]) for x in rows}),
            "texts": texts,
            "dead_matches": {k: sum(1 for x in rows if t.lower() in x[2].lower()) for k, t in texts.items()},
            "queues": sorted({x[1] for x in rows}), "sample": [x[2:] for x in rows[:50]]}
    json.dump(meta, open(a.meta, "w"), indent=1)
    print(f"dead errors: {a.n} rows, {meta['fingerprints']} fingerprints, matches {meta['dead_matches']}",
          file=sys.stderr)


# ------------------------------------------------------------------------------ latency --
def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def get(conn, path, token):
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    return time.perf_counter() - t0, resp.status, body


def cmd_latency(a):
    spec = json.load(open(a.spec))
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    out = []
    for case in spec:
        path, token = case["path"], case["token"]
        dt, status, body = get(conn, path, token)
        if status != 200:
            print(f"{case['name']}: {path} answered {status}: {body[:300]!r}", file=sys.stderr)
            out.append({"name": case["name"], "path": path, "status": status})
            continue
        first = json.loads(body)
        rows = len(first["data"])
        if case.get("walk"):
            # follow the cursor `walk` pages first; then time the page reached
            walk_t = []
            for _ in range(case["walk"]):
                cur = first["meta"].get("nextCursor")
                if not cur:
                    break
                p = path + ("&" if "?" in path else "?") + "after=" + urllib.request.quote(cur, safe="")
                dt, status, body = get(conn, p, token)
                walk_t.append(dt)
                first = json.loads(body)
            path = p
            rows = len(first["data"])
        for _ in range(a.warmup):
            get(conn, path, token)
        ts = []
        for _ in range(a.reqs):
            dt, status, body = get(conn, path, token)
            if status != 200:
                print(f"{case['name']}: answered {status}", file=sys.stderr)
                break
            ts.append(dt * 1000)
        res = {"name": case["name"], "path": path, "status": 200, "rows": rows, "n": len(ts),
               "p50": pct(ts, 50), "p95": pct(ts, 95), "p99": pct(ts, 99), "max": max(ts) if ts else None,
               "mean": statistics.fmean(ts) if ts else None}
        if case.get("walk"):
            res["walk_pages"] = len(walk_t) + 1
            res["walk_mean_ms"] = statistics.fmean(walk_t) * 1000 if walk_t else None
        out.append({**{k: v for k, v in case.items() if k not in ("token", "path")}, **res})
        print(f"   {case['name']}: rows {rows}, p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms, "
              f"max {res['max']:.2f} ms", file=sys.stderr)
    json.dump(out, open(a.out, "w"), indent=1)


# ------------------------------------------------------------------------------ enqueue --
def _enqueue_part(args):
    port, tokens, count, first = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    bad = 0
    body = b"{}"
    for i in range(count):
        tok = tokens[(first + i) % len(tokens)]
        conn.request("POST", "/api/v1/jobs/ping", body=body,
                     headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 202:
            bad += 1
            if bad < 3:
                print(f"enqueue answered {resp.status}", file=sys.stderr)
    return bad


def cmd_enqueue(a):
    tokens = [t.strip() for t in open(a.tokens) if t.strip()]
    parts = [a.n // a.procs + (1 if k < a.n % a.procs else 0) for k in range(a.procs)]
    t0 = time.time()
    with multiprocessing.Pool(a.procs) as pool:
        bad = sum(pool.map(_enqueue_part, [(a.port, tokens, c, k * 7) for k, c in enumerate(parts)]))
    dt = time.time() - t0
    json.dump({"n": a.n, "procs": a.procs, "secs": dt, "per_s": a.n / dt, "refused": bad}, open(a.out, "w"))
    print(f"   enqueued {a.n - bad} pings in {dt:.1f} s ({a.n / dt:,.0f}/s), {bad} refused", file=sys.stderr)
    sys.exit(1 if bad else 0)


# ------------------------------------------------------------------------------- follow --
def cmd_follow(a):
    redis = ["redis-cli", "-h", a.redis_host, "-p", str(a.redis_port)]
    base = f"{a.prefix}:{{ping}}:"
    samples = []
    t0 = time.time()
    base_rows = a.base_rows
    done_processing = None
    last_change, last_rows = t0, -1
    while True:
        t = time.time() - t0
        rows = int(subprocess.run(["psql", "-w", a.db, "-Atqc",
                                   "SELECT count(*) FROM job_archive WHERE queue = 'ping'"],
                                  capture_output=True, text=True).stdout.strip() or 0) - base_rows
        zs = subprocess.run(redis + ["eval",
                                     "return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]),"
                                     " redis.call('ZCARD', KEYS[3]), redis.call('ZCARD', KEYS[4])}", "4",
                                     base + "archive", base + "ready", base + "active", base + "completed"],
                            capture_output=True, text=True).stdout.split()
        backlog, ready, active, completed = (int(x) for x in zs[:4])
        gauge = None
        try:
            for line in urllib.request.urlopen(f"http://127.0.0.1:{a.metrics_port}/metrics", timeout=2).read() \
                    .decode().splitlines():
                if line.startswith("comet_archive_backlog") and 'queue="ping"' in line:
                    gauge = float(line.split()[-1])
        except OSError:
            pass
        samples.append({"t": t, "rows": rows, "backlog": backlog, "ready": ready, "active": active,
                        "completed_in_redis": completed, "gauge": gauge})
        if done_processing is None and ready == 0 and active == 0 and t > 1:
            done_processing = t
        if rows != last_rows:
            last_rows, last_change = rows, time.time()
        if rows >= a.n or time.time() - last_change > a.stall:
            break
        time.sleep(a.interval)
    first = next((s["t"] for s in samples if s["rows"] > 0), None)
    end = samples[-1]["t"]

    def at(frac):
        return next((s["t"] for s in samples if s["rows"] >= frac * a.n), None)

    t10, t90 = at(0.1), at(0.9)
    r = {"n": a.n, "archived": samples[-1]["rows"], "first_row_s": first, "all_archived_s": end,
         "processed_s": done_processing,
         "rows_per_s": samples[-1]["rows"] / (end - first) if first is not None and end > first else None,
         "rows_per_s_10_90": 0.8 * a.n / (t90 - t10) if t10 is not None and t90 and t90 > t10 else None,
         "peak_backlog": max(s["backlog"] for s in samples),
         "peak_gauge": max((s["gauge"] for s in samples if s["gauge"] is not None), default=None),
         "gauge_changes": len({s["gauge"] for s in samples}),
         "lag_after_processing_s": end - done_processing if done_processing is not None else None,
         "peak_completed_in_redis": max(s["completed_in_redis"] for s in samples),
         "samples": samples}
    json.dump(r, open(a.out, "w"), indent=1)
    print(f"   archived {r['archived']} of {a.n} in {end:.1f} s after the worker started; "
          f"{r['rows_per_s'] or 0:,.0f} rows/s; processed at {done_processing}; peak backlog {r['peak_backlog']}, "
          f"gauge peak {r['peak_gauge']}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dead")
    d.add_argument("--n", type=int, default=10000)
    d.add_argument("--seed", type=int, default=14)
    d.add_argument("--out", required=True)
    d.add_argument("--meta", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--spec", required=True)
    lat.add_argument("--port", type=int, required=True)
    lat.add_argument("--warmup", type=int, default=20)
    lat.add_argument("--reqs", type=int, default=200)
    lat.add_argument("--out", required=True)
    e = sub.add_parser("enqueue")
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--procs", type=int, default=4)
    e.add_argument("--tokens", required=True)
    e.add_argument("--port", type=int, required=True)
    e.add_argument("--out", required=True)
    f = sub.add_parser("follow")
    f.add_argument("--n", type=int, required=True)
    f.add_argument("--base-rows", type=int, default=0)
    f.add_argument("--db", required=True)
    f.add_argument("--prefix", required=True)
    f.add_argument("--redis-host", default="127.0.0.1")
    f.add_argument("--redis-port", type=int, default=6379)
    f.add_argument("--metrics-port", type=int, required=True)
    f.add_argument("--interval", type=float, default=0.25)
    f.add_argument("--stall", type=float, default=120)
    f.add_argument("--out", required=True)
    a = p.parse_args()
    {"dead": cmd_dead, "latency": cmd_latency, "enqueue": cmd_enqueue, "follow": cmd_follow}[a.cmd](a)


if __name__ == "__main__":
    main()
