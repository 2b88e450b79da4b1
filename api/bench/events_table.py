#!/usr/bin/env python3
"""Prints the events and rules benchmark's table and rewrites its section of BENCHMARKS.md
(between <!-- bench:events:start --> and <!-- bench:events:end -->). Used by api/bench/events.sh.

The peer column is graphile-worker (a PostgreSQL job queue, see ../shared/bench/peers) where it
does a comparable thing, with what differs said in the cell; "none" where no peer does."""
import argparse
import json
import re
import statistics

START, END = "<!-- bench:events:start -->", "<!-- bench:events:end -->"

ap = argparse.ArgumentParser()
for a in ("driver", "peer", "peer_source", "md", "date", "commit", "foreign", "load", "minutes", "env",
          "machine", "versions"):
    ap.add_argument("--" + a.replace("_", "-"), default="")
args = ap.parse_args()

d = json.load(open(args.driver))
peer = {}
try:
    for line in open(args.peer):
        r = json.loads(line)
        peer.setdefault(r["op"], []).append(r)
except OSError:
    pass


def med(op, key):
    rows = peer.get(op)
    return statistics.median(r[key] for r in rows) if rows else None


def ms(x):
    return "—" if x is None else (f"{x:,.1f} ms" if x >= 10 else f"{x:,.2f} ms")


def met(ok):
    return "yes" if ok else "**no**"


s, b, p, lat = d["single"], d["batch"], d["process"], d["latency"]
bulk, single = med("enqueue-bulk", "jobs_per_s"), med("enqueue-single", "jobs_per_s")
lp50, lp99 = med("latency", "p50_ms"), med("latency", "p99_ms")
errors = sum(v for k, v in s["statuses"].items() if k != "202")
rows = [
    (f"single ingest, open loop at {s['offered']:,.0f} req/s for {s['secs']:.0f} s: p50",
     ms(s["p50_ms"]), "—",
     "none: no peer takes events over HTTP (graphile-worker `addJob` one at a time, closed loop: "
     + (f"{single:,.0f} jobs/s)" if single else "not run)"), "—"),
    (f"single ingest p99 (achieved {s['achieved']:,.0f} req/s; {errors} non-202 of {s['n']:,})",
     ms(s["p99_ms"]), "< 10 ms", "none (as above)", met(s["p99_ms"] < 10 and errors == 0)),
    (f"batch ingest ({b['events']:,} events, batches of 1000, request p50 {ms(b['request_p50_ms'])})",
     f"{b['events_per_s']:,.0f} events/s", "≥ 30,000 events/s",
     (f"{bulk:,.0f} jobs/s (graphile-worker `addJobs` of 1000 straight into Postgres: jobs only, "
      "no HTTP, no event rows)") if bulk else "not run", met(b["events_per_s"] >= 30000)),
    (f"process_event, 20 rules (2 match), 5 recipients each ({p['processed']:,} events in {p['secs']:.1f} s; "
     f"{p['worker_cpu_ms_per_event']:.2f} ms worker CPU per event)",
     f"{p['events_per_s']:,.0f} events/s", "≥ 2,000 events/s",
     "none: no peer evaluates rules or writes notifications", met(p["events_per_s"] >= 2000)),
    (f"ingest 202 → notification rows exist, {lat['offered']:.0f} ev/s for {lat['secs']:.0f} s: p50 "
     f"(polled every {lat['poll_ms']:g} ms; {lat.get('missing', 0)} never seen)",
     ms(lat.get("p50_ms")), "—",
     f"{ms(lp50)} (graphile-worker enqueue → job start at 500 jobs/s: no rules, no writes)" if lp50 else "not run",
     "—"),
    ("ingest 202 → notification rows exist: p99", ms(lat.get("p99_ms")), "—",
     f"{ms(lp99)} (as above)" if lp99 else "not run", "—"),
]

table = ["| measure | Comet | target | peer (same shape where one exists) | met? |", "|---|---|---|---|---|"]
table += [f"| {a} | {v} | {t} | {pe} | {m} |" for a, v, t, pe, m in rows]
print("\n".join(table))

if args.md:
    section = "\n".join([
        START,
        f"Measured {args.date} with `bash api/bench/events.sh` ({args.env}; took {args.minutes} min), commit `{args.commit}`.",
        "",
        f"- machine: {args.machine}; load average {args.load}",
        f"- Postgres / Redis / rustc: {args.versions}; release builds; one API and one worker process",
        f"- share of the machine's CPU used by other processes during the run: {float(args.foreign):.2f}"
        if args.foreign not in ("", "null") else "- (no guard report)",
        f"- single ingest: API CPU {s['api_cpu_s']:.1f} s, load generator ({s.get('driver', 'Python asyncio')}) CPU {s['driver_cpu_s']:.1f} s "
        f"over {s['secs']:.0f} s; {s['conns']} connections{' at most' if 'Rust' in s.get('driver', '') else ''}; batch: API CPU {b['api_cpu_s']:.1f} s over {b['secs']:.1f} s",
        (f"- Postgres backends of the bench's database, CPU: single ingest {s['pg_cpu_s']:.1f} s "
         f"({s['pg_cpu_s'] * 1000 / max(s['n'], 1):.2f} ms per request), batch {b['pg_cpu_s']:.1f} s, "
         f"process_event {p['pg_cpu_ms_per_event']:.2f} ms per event (worker {p['worker_cpu_ms_per_event']:.2f} ms)")
        if "pg_cpu_s" in s else "- (no Postgres CPU figures)",
        f"- peer figures: graphile-worker, {args.peer_source}",
        "",
        *table,
        END,
    ])
    text = open(args.md).read()
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(args.md, "w").write(text)
