#!/usr/bin/env python3
"""Prints the job search bench's table and records it in BENCHMARKS.md (run by job_search.sh;
reads its environment and the JSON files in $OUT)."""
import json
import os
import re
import sys
import time

E = os.environ
out, md = E["OUT"], E.get("MD", "")
START, END = "<!-- bench:job_search:start -->", "<!-- bench:job_search:end -->"


def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None


lat = load("latency.json") or []
meta = load("dead.meta.json") or {}
seed = load("seed.json") or {}
enq, arc = load("enqueue.json"), load("archive.json")
counts = dict(l.split() for l in open(os.path.join(out, "seed.counts"))) if os.path.exists(os.path.join(out, "seed.counts")) else {}
size = open(os.path.join(out, "seed.size")).read().split() if os.path.exists(os.path.join(out, "seed.size")) else []

PEER = "none (see notes)"


def ms(v):
    return "—" if v is None else f"{v:,.1f}"


rows, misses = [], 0
for c in lat:
    if c.get("status") != 200:
        rows.append(f"| {c['name']} | answered {c.get('status')} | | | | | **no** | |")
        misses += 1
        continue
    target = 1000 if c["group"] == "error" else 100
    ok = c["p99"] < target
    misses += 0 if ok else 1
    what = c["name"]
    if c["group"] == "error":
        what = f"dead, error contains “{c['text']}” ({c['who']})"
        found = f"{c['rows']}" + (f" of {c['expected']:,}" if c.get("expected") is not None else "")
    else:
        found = str(c["rows"])
    if c.get("walk"):
        what += f"; walking there: {ms(c.get('walk_mean_ms'))} ms a page"
    rows.append(f"| {what} | {found} | {ms(c['p50'])} | {ms(c['p95'])} | {ms(c['p99'])} | "
                f"< {target:,} ms | {'yes' if ok else '**no**'} | {PEER} |")

table = ["| request (GET /api/v1/jobs…, 50 a page) | rows answered | p50 ms | p95 ms | p99 ms | target (p99) | met? | peer |",
         "|---|---|---|---|---|---|---|---|", *rows]
arch = []
if enq:
    arch.append(f"| enqueue {enq['n']:,} pings through POST /api/v1/jobs/ping ({enq['procs']} clients, keep-alive) | "
                f"{enq['per_s']:,.0f} jobs/s ({enq['secs']:.1f} s; {enq['refused']} refused) | — | — |")
if arc:
    def s(v):
        return "—" if v is None else f"{v:,.1f} s"
    gauge = "—" if arc["peak_gauge"] is None else f"{arc['peak_gauge']:,.0f}"
    arch += [
        f"| archiver: job_archive fill rate, first row → all {arc['n']:,} archived | "
        f"{(arc['rows_per_s'] or 0):,.0f} rows/s ({arc['archived']:,} archived) | none (see notes) | — |",
        f"| archiver: fill rate between 10 % and 90 % archived | {(arc['rows_per_s_10_90'] or 0):,.0f} rows/s | — | — |",
        f"| worker start → every ping processed / → every ping archived | {s(arc['processed_s'])} / {s(arc['all_archived_s'])} "
        f"(lag after processing {s(arc['lag_after_processing_s'])}) | — | — |",
        f"| archive backlog, peak: Redis `archive` set / `comet_archive_backlog` gauge | "
        f"{arc['peak_backlog']:,} / {gauge} "
        f"({arc['gauge_changes']} distinct gauge values over {len(arc['samples'])} samples) | — | — |",
    ]
atable = ["| archiver (one worker, WORKER_QUEUES=ping) | Comet | peer | target |", "|---|---|---|---|", *arch] if arch else []

print("\n".join(table))
if atable:
    print()
    print("\n".join(atable))
foreign = E.get("FOREIGN", "null")
took = (time.time() - int(E["T_START"]) + 30) // 60
notes = [
    "Peers: none of BullMQ, Celery or graphile-worker (../shared/bench/peers) has a search over finished jobs: "
    "graphile-worker deletes a job when it completes (only failed ones stay, in its jobs table, without an "
    "error-text index), BullMQ keeps finished jobs in per-queue Redis sets/lists that its API lists by state "
    "but never searches by error text across queues, Celery's result backend is a key-value store. "
    "So no peer figure is set beside Comet's; the targets are the issue's (error search p99 < 1 s, any state "
    "page p99 < 100 ms).",
    "The error search is `state=dead&error=TEXT` (ILIKE '%TEXT%', trigram GIN index); its texts: "
    + ", ".join(f"“{t}” ({k}: {meta.get('dead_matches', {}).get(k, '?')} dead rows)" for k, t in meta.get("texts", {}).items())
    + ". Every answer is one page (at most 50 rows); the operator sees every project, a project's token its own "
    "(1/20 of the rows).",
]
section = "\n".join([
    START,
    f"Measured {E['DATE']} with `bash api/bench/job_search.sh` (or `BENCHES=job_search ./dev bench`; ROWS={E['ROWS']} "
    f"DEAD={E['DEAD']} REQS={E['REQS']} ARCHIVE_N={E['ARCHIVE_N']}; took {took:.0f} min), commit `{E['COMMIT']}`.",
    "",
    f"- machine: {E['NPROC']} cores ({E['CPU_MODEL']}), {E['MEM_GIB']} GiB RAM, {E['UNAME']}; load average before "
    f"{E['LOAD_BEFORE']}, after {E['LOAD_AFTER']}",
    f"- Postgres {E['PGV']} (shared_buffers {E['SHARED_BUFFERS']}), release binaries, one API process, one keep-alive "
    f"client sending one request at a time: {E['WARMUP']} untimed then {E['REQS']} timed per row (send → last body byte)",
    f"- job_archive: " + ", ".join(f"{int(v):,} {k}" for k, v in sorted(counts.items()))
    + (f"; {size[0]} {size[1]} with indexes (heap {size[2]} {size[3]}, trigram index {size[4]} {size[5]})" if len(size) >= 6 else "")
    + (f"; seeded by SQL in {seed['insert_s']:.0f} s, then VACUUM ANALYZE ({seed['vacuum_s']:.0f} s)" if seed else "")
    + f"; {meta.get('templates', '?')} error templates giving {meta.get('fingerprints', '?')} fingerprints",
    f"- share of the machine's CPU used by other processes during the run: {float(foreign):.2f}"
    if foreign not in ("", "null") else "- (no guard report)",
    "",
    *table,
    "",
    *atable,
    "",
    *[f"- {n}" for n in notes],
    END,
])
if md:
    text = open(md).read()
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Job search (issue 14)\n\n" + section + "\n"
    open(md, "w").write(text)
sys.exit(1 if misses else 0)
