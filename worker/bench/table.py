"""Comet vs BullMQ: one table from the JSON lines of worker/bench/run.sh.

  python3 table.py COMET.jsonl BULLMQ.jsonl [--md BENCHMARKS.md --command ... --env ... ...]

Prints the table (markdown) on stdout; with --md, replaces the part of that file between the
`<!-- bench:results:start -->` and `<!-- bench:results:end -->` markers (creating the file or
the markers if missing).  With several runs, every figure is the median over runs.
"""
import argparse
import datetime
import json
import os
import statistics
import sys

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def load(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    return rows


def pick(rows, op, conc, field):
    vals = [r[field] for r in rows
            if r.get("op") == op and str(r.get("conc")) == str(conc) and r.get(field) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "jobs/s":
        return f"{v:,.0f}"
    if unit == "ms":
        return f"{v:.2f}"
    if unit == "MiB":
        return f"{v:.1f}"
    if unit == "bytes":
        return f"{v:,.0f}"
    return f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("comet")
    ap.add_argument("bullmq")
    ap.add_argument("--md")
    ap.add_argument("--reference", help="BullMQ JSON lines measured on a quiet machine "
                    "(the peers' results/bullmq.jsonl): adds a column Comet / that figure")
    ap.add_argument("--command", default="bash worker/bench/run.sh")
    ap.add_argument("--env", default="")
    ap.add_argument("--machine", default="")
    ap.add_argument("--redis", default="")
    ap.add_argument("--node", default="")
    ap.add_argument("--rustc", default="")
    ap.add_argument("--commit", default="")
    ap.add_argument("--minutes", default="")
    ap.add_argument("--date", help="when it was measured (default: now)")
    a = ap.parse_args()
    comet, bull = load(a.comet), load(a.bullmq)
    ref = load(a.reference) if a.reference else []
    # Compare with reference runs of the same size only.
    sizes = {r.get("n") for r in comet}
    ref = [r for r in ref if r.get("n") in sizes]

    # (label, comet op, bullmq op, conc, field, unit, target ratio, higher is better)
    specs = [
        ("enqueue bulk (addBulk, chunks of 1000)", "enqueue-bulk", "enqueue-bulk", "chunk1000",
         "jobs_per_s", "jobs/s", 2.0, True),
        ("enqueue single (each awaited)", "enqueue-single", "enqueue-single", 1, "jobs_per_s",
         "jobs/s", None, True),
        ("enqueue single, 64 in flight", "enqueue-single-par", "enqueue-single-par", 64,
         "jobs_per_s", "jobs/s", None, True),
    ]
    concs = sorted({int(r["conc"]) for r in comet + bull if str(r.get("op", "")).startswith("process")})
    for c in concs:
        n = next((r["n"] for r in comet + bull if str(r.get("op", "")).startswith("process")), "N")
        specs.append((f"process {n:,} no-op jobs, c={c}", "process-keepResults",
                      "process-removeOnComplete", c, "jobs_per_s", "jobs/s", 2.0, True))
    lat_concs = sorted({int(r["conc"]) for r in comet + bull if r.get("op") == "latency"})
    for c in lat_concs:
        specs.append((f"enqueue→start latency p50, c={c}", "latency", "latency", c, "p50_ms", "ms",
                      None, False))
        specs.append((f"enqueue→start latency p99, c={c}", "latency", "latency", c, "p99_ms", "ms",
                      1.0, False))

    lines = ["| measurement | unit | Comet | BullMQ | Comet/BullMQ | target | met? |"
             + (" BullMQ reference | Comet/reference |" if ref else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if ref else "")]
    met_all = []

    def row(label, unit, cv, bv, target, higher, rv=None):
        ratio = cv / bv if cv is not None and bv else None
        if target is None:
            tgt, met = "—", "—"
        else:
            tgt = (f"≥ {target:g}×" if higher else f"≤ {target:g}×")
            if ratio is None:
                met = "?"
            else:
                ok = ratio >= target if higher else ratio <= target
                met = "yes" if ok else "**no**"
                met_all.append(ok)
        extra = ""
        if ref:
            rr = cv / rv if cv is not None and rv else None
            extra = f" {fmt(rv, unit)} | {'—' if rr is None else f'{rr:.2f}'} |"
        lines.append(f"| {label} | {unit} | {fmt(cv, unit)} | {fmt(bv, unit)} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}'} | {tgt} | {met} |{extra}")

    for label, cop, bop, conc, field, unit, target, higher in specs:
        row(label, unit, pick(comet, cop, conc, field), pick(bull, bop, conc, field), target, higher,
            pick(ref, bop, conc, field))

    def peak_rss(rows, prefix):
        per_conc = [pick(rows, r["op"], r["conc"], "peak_rss_kb")
                    for r in rows if str(r.get("op", "")).startswith(prefix)]
        per_conc = [v for v in per_conc if v is not None]
        return max(per_conc) / 1024 if per_conc else None

    row("worker peak RSS (process runs, max over c)", "MiB", peak_rss(comet, "process"),
        peak_rss(bull, "process"), 0.25, False,
        peak_rss([r for r in ref if r.get("op") == "process-removeOnComplete"], "process"))

    def waiting_bytes(rows):
        # Redis bytes per waiting no-op job: MEMORY USAGE summed over the system's own keys
        # after `fill`, before the run (median over the process runs)
        vals = [r["redis_mb_before"] * 2 ** 20 / r["n"] for r in rows
                if str(r.get("op", "")).startswith("process") and r.get("redis_mb_before")
                and r.get("n")]
        return statistics.median(vals) if vals else None

    row("Redis bytes per waiting no-op job (after fill)", "bytes", waiting_bytes(comet),
        waiting_bytes(bull), 1.0, False,
        waiting_bytes([r for r in ref if r.get("op") == "process-removeOnComplete"]))
    table = "\n".join(lines)

    # Where the Redis time goes: per-job cost on the server, from INFO deltas.
    cost = ["| operation | conc | Comet Redis CPU µs/job | BullMQ Redis CPU µs/job | "
            "Comet cmds/job (scripts) | BullMQ cmds/job (scripts) | Comet peak RSS MiB | "
            "BullMQ peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|"]
    for label, cop, bop, conc, field, unit, target, higher in specs:
        if cop == "latency":
            continue

        def c(rows, op, f):
            return pick(rows, op, conc, f)

        def cmds(rows, op):
            v, s = c(rows, op, "redis_cmds_per_job"), c(rows, op, "redis_scripts_per_job")
            return "—" if v is None else f"{v:.1f} ({s:.3f})"

        def mib(rows, op):
            v = c(rows, op, "peak_rss_kb")
            return "—" if v is None else f"{v / 1024:.0f}"

        cost.append(f"| {cop} / {bop} | {conc} | {fmt(c(comet, cop, 'redis_cpu_us_per_job'), '')} | "
                    f"{fmt(c(bull, bop, 'redis_cpu_us_per_job'), '')} | {cmds(comet, cop)} | "
                    f"{cmds(bull, bop)} | {mib(comet, cop)} | {mib(bull, bop)} |")
    for conc in lat_concs:
        cm = pick(comet, "latency", conc, "peak_rss_kb")
        bm = pick(bull, "latency", conc, "peak_rss_kb")
        cost.append(f"| latency worker | {conc} | | | | | {'—' if cm is None else f'{cm / 1024:.0f}'} | "
                    f"{'—' if bm is None else f'{bm / 1024:.0f}'} |")
    cost_table = "\n".join(cost)

    runs = max([r.get("run", 1) for r in comet + bull] or [0])
    foreign = max([r.get("foreign_cpu", 0) for r in comet + bull] or [0])
    bver = next((r.get("version") for r in bull if r.get("version")), "?")
    summary = (f"{sum(met_all)} of {len(met_all)} targets met" if met_all else "no targets evaluated")
    date = a.date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    print(table)
    print()
    print(f"{summary}; median of {runs} run(s); max foreign CPU during a run: {foreign:.3f} of the machine.")

    if not a.md:
        return
    section = "\n".join([
        START,
        f"Measured {date} with `{a.command}` ({a.env}; took {a.minutes} min), commit `{a.commit}`.",
        "",
        f"- machine: {a.machine}",
        f"- Redis {a.redis} on loopback; BullMQ {bver} on Node {a.node}; Comet built with {a.rustc}, release profile",
        f"- {summary}; median of {runs} run(s); largest share of the machine's CPU used by other processes during a run: {foreign:.3f}",
        "",
        table,
        "",
        ("The last two columns set Comet beside BullMQ's figures from the peers' own runs "
         "(`results/bullmq.jsonl`, median of their runs, measured on a quiet machine of this "
         "kind): a check on how much the machine's load during this run flattered either side. "
         "The targets are judged on the same-run columns." if ref else ""),
        "",
        "Redis cost per job (from `INFO` deltas over the timed part) and peak RSS per run:",
        "",
        cost_table,
        END,
    ])
    text = open(a.md).read() if os.path.exists(a.md) else (
        "# Benchmarks\n\nRun `bash worker/bench/run.sh` (or `./dev bench`).\n\n## Latest results\n\n")
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(a.md, "w") as f:
        f.write(text)
    print(f"results recorded in {a.md}", file=sys.stderr)


if __name__ == "__main__":
    main()
