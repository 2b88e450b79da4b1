#!/usr/bin/env python3
"""Prints the user-management benchmark's table and rewrites its section of BENCHMARKS.md
(between <!-- bench:users:start --> and <!-- bench:users:end -->). Used by api/bench/users.sh."""
import argparse
import json
import re

START, END = "<!-- bench:users:start -->", "<!-- bench:users:end -->"

ap = argparse.ArgumentParser()
for a in ("driver", "oha", "oha_last", "oha_cursor", "oha_roles", "login_seq", "login", "me_idle", "me_flood", "users", "md", "date", "commit", "foreign", "minutes", "env", "machine", "versions"):
    ap.add_argument("--" + a.replace("_", "-"), default="")
args = ap.parse_args()

d = json.load(open(args.driver))
inv, de = d["invite"], d["deact"]


# oha's name for requests still in flight when the run's duration ends: cut off by the
# measurement, not failed by the server, so not counted as requests.
CUT_OFF = "aborted due to deadline"


def load(path):
    """An oha JSON report: (latency percentiles, requests, non-200s, seconds, achieved req/s)."""
    o = json.load(open(path))
    codes = {str(k): v for k, v in o.get("statusCodeDistribution", {}).items()}
    errors = {k: v for k, v in o.get("errorDistribution", {}).items() if k != CUT_OFF}
    total = sum(codes.values()) + sum(errors.values())
    secs = o["summary"].get("total") or 1
    return o["latencyPercentiles"], total, total - codes.get("200", 0), secs, total / secs


lp, total, non200, secs, achieved = load(args.oha)


def ms(x):
    return f"{x:,.1f} ms" if x >= 10 else f"{x:,.2f} ms"


rows = [
    (f"invites end to end ({inv['n']} invites, {inv['conc']} in flight; first request → last email accepted)",
     f"{inv['per_s_end_to_end']:,.0f} invites/s ({inv['seconds_to_last_email']:.2f} s)", "—", "—"),
    ("invite request rate (all answered)", f"{inv['per_s_requests']:,.0f} req/s", "—", "—"),
    ("invite request latency p50", ms(inv["lat_p50_ms"]), "—", "—"),
    ("invite request latency p99", ms(inv["lat_p99_ms"]), "—", "—"),
    (f"deactivate answered on API A → first 401 on API B, p50 ({de['repeats']} runs; negative: B refused before A answered)", ms(de["p50_ms"]), "—", "—"),
    ("deactivate request sent to A → first 401 on B, p50 / max", f"{ms(de['from_request_p50_ms'])} / {ms(de['from_request_max_ms'])}", "—", "—"),
    (f"deactivate → first 401 on B, max; 200s on requests sent after the answer",
     f"{ms(de['max_ms'])}; {de['ok_sent_after_answer']}", "0 such 200s",
     "yes" if de["ok_sent_after_answer"] == 0 else "**no**"),
]
p95, p99 = lp["p95"] * 1e3, lp["p99"] * 1e3
rows += [
    (f"GET /api/v1/users, {int(args.users):,} users, {achieved:,.0f} req/s for {secs:.0f} s: p50", ms(lp["p50"] * 1e3), "—", "—"),
    ("GET /api/v1/users p95", ms(p95), "< 100 ms (at 1000 req/s, seed target)", "yes" if p95 < 100 else "**no**"),
    ("GET /api/v1/users p99", ms(p99), "< 20 ms at 2000 req/s", "yes" if p99 < 20 else "**no**"),
    ("GET /api/v1/users errors / non-200", f"{non200} of {total:,}", "0", "yes" if non200 == 0 else "**no**"),
]
for path, how in ((args.oha_last, "by page number (deepest OFFSET)"), (args.oha_cursor, "by cursor (`after`)")):
    if not path:
        continue
    llp, ltotal, lnon200, lsecs, lachieved = load(path)
    rows += [
        (f"GET /api/v1/users last page {how}, {lachieved:,.0f} req/s for {lsecs:.0f} s: p50 / p99",
         f"{ms(llp['p50'] * 1e3)} / {ms(llp['p99'] * 1e3)}", "—", "—"),
        (f"GET /api/v1/users last page {how}: errors / non-200", f"{lnon200} of {ltotal:,}", "0",
         "yes" if lnon200 == 0 else "**no**"),
    ]

if args.oha_roles:
    rlp, rtotal, rnon200, rsecs, rachieved = load(args.oha_roles)
    rp99 = rlp["p99"] * 1e3
    rows += [
        (f"GET /api/v1/roles (permissions and user counts over {int(args.users):,} users), {rachieved:,.0f} req/s for {rsecs:.0f} s: p50",
         ms(rlp["p50"] * 1e3), "—", "—"),
        ("GET /api/v1/roles p99", ms(rp99), "< 20 ms at 2000 req/s", "yes" if rp99 < 20 else "**no**"),
        ("GET /api/v1/roles errors / non-200", f"{rnon200} of {rtotal:,}", "0", "yes" if rnon200 == 0 else "**no**"),
    ]
if args.login_seq and args.login:
    slp, stotal, snon200, _, _ = load(args.login_seq)
    flp, ftotal, fnon200, fsecs, fachieved = load(args.login)
    fcodes = {str(k): v for k, v in json.load(open(args.login)).get("statusCodeDistribution", {}).items()}
    ok = fcodes.get("200", 0)
    rows += [
        (f"login one at a time ({stotal} logins; ≈ one Argon2id verification + a round trip): p50 / p99",
         f"{ms(slp['p50'] * 1e3)} / {ms(slp['p99'] * 1e3)}", "—", "—"),
        (f"login flood, closed loop, {fsecs:.0f} s: logins/s sustained (200s only)",
         f"{ok / fsecs:,.1f} logins/s", "—", "—"),
        ("login flood: latency p50 / p99 (every answer)", f"{ms(flp['p50'] * 1e3)} / {ms(flp['p99'] * 1e3)}", "—", "—"),
        ("login flood: refused 503 `busy` (Argon2 gate full for 2 s) / other non-200",
         f"{fcodes.get('503', 0)} / {fnon200 - fcodes.get('503', 0)} of {ftotal:,}", "no other failure",
         "yes" if fnon200 == fcodes.get("503", 0) else "**no**"),
    ]
    if args.me_idle and args.me_flood:
        ilp, itotal, inon200, _, iachieved = load(args.me_idle)
        mlp, mtotal, mnon200, _, machieved = load(args.me_flood)
        rows += [
            (f"GET /api/v1/users/me at {iachieved:,.0f} req/s, no flood: p50 / p99",
             f"{ms(ilp['p50'] * 1e3)} / {ms(ilp['p99'] * 1e3)}", "—", "—"),
            (f"GET /api/v1/users/me at {machieved:,.0f} req/s during the login flood: p50 / p99; non-200",
             f"{ms(mlp['p50'] * 1e3)} / {ms(mlp['p99'] * 1e3)}; {mnon200} of {mtotal:,}",
             "p99 < 50 ms, no error", "yes" if mlp["p99"] * 1e3 < 50 and mnon200 == 0 else "**no**"),
        ]

table = ["| measurement | value | target | met? |", "|---|---|---|---|"]
table += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows]
print("\n".join(table))

if args.md:
    section = "\n".join([
        START,
        f"Measured {args.date} with `bash api/bench/users.sh` ({args.env}; took {args.minutes} min), commit `{args.commit}`.",
        "",
        f"- machine: {args.machine}",
        f"- Postgres / Redis / oha / rustc: {args.versions}; release builds; share of the machine's CPU used by other processes during the run: {float(args.foreign):.2f}" if args.foreign not in ("", "null") else "- (no guard report)",
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
