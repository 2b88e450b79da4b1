#!/usr/bin/env python3
"""Prints the notifications benchmark's table from the driver's JSON and records it in
BENCHMARKS.md (between <!-- bench:notifications:start --> and <!-- bench:notifications:end -->).
Used by api/bench/notifications.sh.

The peer column: no peer of ../shared/bench/peers (BullMQ, Celery, graphile-worker) serves a live
stream or delivers signed webhooks, which the cells say."""
import argparse
import json
import re

START, END = "<!-- bench:notifications:start -->", "<!-- bench:notifications:end -->"

ap = argparse.ArgumentParser()
for a in ("driver", "md", "date", "commit", "foreign", "load", "minutes", "env", "machine", "versions"):
    ap.add_argument("--" + a, default="")
args = ap.parse_args()
d = json.load(open(args.driver))


def ms(v):
    return "—" if v is None else f"{v:,.1f} ms"


def met(ok):
    return "yes" if ok else "**no**"


def stage_line(ph):
    """A phase's stages from the rows' timestamps (the driver's `stages`), p50 / p99."""
    st = ph["stages"]

    def pair(name):
        p50, p99 = st.get(f"{name}_p50_ms"), st.get(f"{name}_p99_ms")
        return "—" if p50 is None or p99 is None else f"{p50:,.0f} / {p99:,.0f} ms"

    parts = f"event received → process_event's transaction p50 / p99 {pair('process')}"
    if "tx_p50_ms" in st:
        parts += (f": → its job pushed to Redis by the outbox relay {pair('queued')}, → the worker's "
                  f"start {pair('started')}, → the transaction (batched read, wait for the writer) "
                  f"{pair('tx')} (jobs found in `job_archive`: {st['jobs_found']:,} of {st['events']:,})")
    return f"- {ph['rate']:,.0f}/s, stages from the rows' timestamps: {parts}"


NO_PEER = "none: no peer serves a live stream"
rows = []
for ph in d["live"]:
    post = ph["post"]
    lost = ph["expected"] - ph["arrived"]
    what = (f"event 202 → `notification` on the stream, open loop at {ph['rate']:,.0f} events/s for "
            f"{post['n'] / ph['rate']:.0f} s (achieved {post['achieved_per_s']:,.0f}/s; "
            f"{sum(v for k, v in post['statuses'].items() if k != '202')} non-202 of {post['n']:,}); "
            f"{d['group']} recipients per event")
    p99_ok = ph["p99_ms"] is not None and ph["p99_ms"] < 20 and lost == 0
    rows += [
        (f"{what}: p50", ms(ph["p50_ms"]), "—", NO_PEER, "—"),
        (f"{ph['rate']:,.0f} events/s: p99 (max {ms(ph['max_ms'])})", ms(ph["p99_ms"]),
         "< 20 ms (seed 004: < 50 ms)", NO_PEER,
         met(p99_ok) + ("" if p99_ok or ph["p99_ms"] is None or ph["p99_ms"] >= 50 or lost else " (< 50 ms: yes)")),
        (f"{ph['rate']:,.0f} events/s: stream messages arrived within {post['drain_s']:.1f} s of the last post",
         f"{ph['arrived']:,} of {ph['expected']:,}", "all", NO_PEER, met(lost == 0)),
    ]
w = d["webhook"]
rows.append((f"webhook deliveries from one worker, backlog of {w['processed']:,} notifications, "
             f"{w['endpoints']} endpoint(s) answering 204 at once ({w['received']:,} received in "
             f"{w['span_s']:.1f} s, {w['attempts_ok']:,} attempts recorded ok; mean {w['mean_per_s']:,.0f}/s, "
             f"peak second {w['peak_per_s']:,})", f"{w['steady_per_s']:,.0f} deliveries/s", "≥ 5,000/s",
             "none: no peer delivers signed webhooks", met(w["steady_per_s"] >= 5000)))
m = d["memory"]
rows.append((f"API RSS per open stream ({m['streams']:,} streams on one process: "
             f"{m['rss0_kib'] / 1024:.1f} → {m['rss1_kib'] / 1024:.1f} MiB; "
             f"{m['rss_after_close_kib'] / 1024:.1f} MiB after they closed)",
             f"{m['per_stream_kib']:.1f} KiB", "—", NO_PEER, "—"))

table = ["| measure | Comet | target | peer | met? |", "|---|---|---|---|---|"]
table += [f"| {a} | {v} | {t} | {pe} | {mt} |" for a, v, t, pe, mt in rows]
print("\n".join(table))

if args.md:
    cpu = "; ".join(f"{ph['rate']:,.0f}/s: API A {ph['cpu_s']['api_a']} s, API B {ph['cpu_s']['api_b']} s, "
                    f"worker {ph['cpu_s']['worker']} s, Postgres backends {ph['cpu_s'].get('postgres', '?')} s"
                    for ph in d["live"])
    sse = d["sse_stats"]
    section = "\n".join([
        START,
        f"Measured {args.date} with `bash api/bench/notifications.sh` ({args.env}; took {args.minutes} min), "
        f"commit `{args.commit}`.",
        "",
        f"- machine: {args.machine}; load average {args.load}",
        f"- Postgres / Redis / rustc: {args.versions}; release builds; two API processes, one worker",
        f"- share of the machine's CPU used by other processes during the run: {float(args.foreign):.2f}"
        if args.foreign not in ("", "null") else "- (no guard report)",
        f"- CPU used during each live phase (posting and draining): {cpu}; webhook delivery: worker {w['worker_cpu_s']} s, "
        f"Postgres backends {w.get('postgres_cpu_s', '?')} s"
        + (f" over {w['wall_s']} s (worker start to last delivery)" if "wall_s" in w else ""),
        *[stage_line(ph) for ph in d["live"] if ph.get("stages")],
        f"- streams: {d['users']} users, {d['groups']} roles of {d['group']}; reconnects "
        f"{sum(s['reconnects'] for s in sse)}, ticket errors {sum(s['ticket_errors'] for s in sse)}, "
        f"stream errors {sum(s['stream_errors'] for s in sse)}",
        f"- webhook backlog: {w['events']:,} events ingested in {w['ingest_s']} s, processed in {w['process_s']} s "
        f"by a worker running only process_event",
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
