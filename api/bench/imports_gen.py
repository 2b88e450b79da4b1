#!/usr/bin/env python3
"""Generates the files of the bulk-import benchmark (api/bench/imports.sh). Python 3 stdlib only.

  imports_gen.py csv  --rows N --out users.csv --meta meta.json
                      [--copy-project UUID --roles admin=UUID,member=UUID --copy-out PREFIX]
  imports_gen.py xlsx --rows N --out users.xlsx --meta meta.json [--prefix x]

The rows (header `email,name,roles`), deterministic for a given --seed and --prefix:
  - ~5 % invalid: 2 % bad emails (no @, two @, a space, no local part, no dot in the domain),
    1.5 % an unknown role name next to a real one, 1.5 % a name over 100 characters;
  - ~1 % a later duplicate of an earlier valid row's email (sometimes in another case): the
    import reports it as failed ("a duplicate of row N"), the first one is imported;
  - the rest valid: a mixed-case email on one of 50 domains, a name (2 % with a comma, so
    quoted), roles from the default roles of a project (`admin`, `member`): 70 % "member",
    10 % "admin;member", 10 % "admin", 10 % none.
--meta gets the expected counters: rows, valid (= created in a fresh project), invalid,
duplicates (failed = invalid + duplicates), role_grants (user_roles rows of the valid rows).

With --copy-project, the valid rows also go to PREFIX.v7.users and PREFIX.v4.users as the CSV a
plain `COPY users (user_id, project_id, email, name, status) FROM STDIN (FORMAT csv)` reads (the
email lower-cased, status ACTIVE: what the import writes), and their roles to PREFIX.v7.roles
and PREFIX.v4.roles for `COPY user_roles (project_id, user_id, role_id)`. The two differ in the
user ids only: v7 ones are time-ordered UUIDv7 in file order, as the import makes them
(`Uuid::now_v7()`: each index on user_id grows at its right edge), v4 ones random (uuid4: every
insert lands on a random leaf page).

The XLSX is a minimal workbook written with zipfile: [Content_Types].xml, the relationships,
xl/workbook.xml (one sheet, "Users"), xl/sharedStrings.xml (every text, as Excel writes them)
and xl/worksheets/sheet1.xml (cells `t="s"` with their `r` references and a <dimension>).
"""
import argparse
import csv
import json
import random
import os
import sys
import time
import unicodedata
import uuid
import zipfile
from xml.sax.saxutils import escape

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis",
         "Radia", "John", "Sophie", "Tim", "Hedy", "Linus", "Katherine", "Niklaus", "Leslie", "Joan",
         "Élodie", "Zoë", "Søren", "Jürgen", "Chloé"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
        "Ritchie", "Perlman", "McCarthy", "Wilson", "Berners-Lee", "Lamarr", "Torvalds", "Johnson",
        "Wirth", "Lamport", "Clarke", "O'Neil", "Müller", "Ørsted", "García", "Nakamura"]
DOMAINS = [f"corp{k}.bench.test" for k in range(50)]
BAD_EMAILS = [
    lambda i, r: f"user{i}.bench.test",          # no @
    lambda i, r: f"user{i}@@corp1.bench.test",  # two @
    lambda i, r: f"user {i}@corp2.bench.test",  # a space
    lambda i, r: "@corp3.bench.test",           # no local part
    lambda i, r: f"user{i}@localhost",          # no dot in the domain (a TLD is required)
]


def rows(n, seed, prefix):
    """Yields (email, name, roles, kind, roles_list) for n rows; kind is valid, invalid or dup."""
    rnd = random.Random(seed)
    valid_emails = []
    for i in range(1, n + 1):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        x = rnd.random()
        email = f"{first}.{last}.{prefix}{i}@{rnd.choice(DOMAINS)}"
        # the address stays ASCII: accents dropped (Zoë → zoe), what does not decompose too
        email = unicodedata.normalize("NFKD", email).encode("ascii", "ignore").decode()
        if rnd.random() < 0.9:
            email = email.lower()
        name = f"{last}, {first}" if rnd.random() < 0.02 else f"{first} {last}"
        y = rnd.random()
        roles_list = (["member"] if y < 0.7 else ["admin", "member"] if y < 0.8
                      else ["admin"] if y < 0.9 else [])
        roles = ";".join(roles_list)
        if x < 0.02:
            yield rnd.choice(BAD_EMAILS)(i, rnd), name, roles, "invalid", []
        elif x < 0.035:
            yield email, name, ";".join(roles_list + ["ghost-role"]), "invalid", []
        elif x < 0.05:
            yield email, (name + " ") * 12 + "x" * rnd.randint(1, 40), roles, "invalid", []
        elif x < 0.06 and valid_emails:
            dup = valid_emails[rnd.randrange(len(valid_emails))]
            yield (dup.upper() if rnd.random() < 0.3 else dup), name, roles, "dup", []
        else:
            valid_emails.append(email.lower())
            yield email, name, roles, "valid", roles_list


_last_ms = 0
_seq = 0


def uuid7():
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits, except that
    within one millisecond the first 12 of them count up, so ids rise in generation order."""
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        ms, _seq = _last_ms, _seq + 1
        if _seq > 0xFFF:
            ms, _seq = ms + 1, 0
    else:
        _seq = 0
    _last_ms = ms
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (_seq << 64) | (0b10 << 62) | rand_b)


def gen_csv(a):
    roles = dict(kv.split("=", 1) for kv in a.roles.split(",")) if a.roles else {}
    counts = {"valid": 0, "invalid": 0, "dup": 0, "roles": 0}
    copies = []
    if a.copy_project:
        for v, make in (("v7", uuid7), ("v4", uuid.uuid4)):
            copies.append((make, csv.writer(open(f"{a.copy_out}.{v}.users", "w", newline="", encoding="utf-8")),
                           csv.writer(open(f"{a.copy_out}.{v}.roles", "w", newline="", encoding="utf-8"))))
    with open(a.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["email", "name", "roles"])
        for email, name, role_s, kind, role_l in rows(a.rows, a.seed, a.prefix):
            counts[kind] += 1
            counts["roles"] += len(role_l)
            w.writerow([email, name, role_s])
            if kind != "valid":
                continue
            for make, cu, cr in copies:
                uid = str(make())
                cu.writerow([uid, a.copy_project, email.lower(), name.strip(), "ACTIVE"])
                for r in role_l:
                    cr.writerow([a.copy_project, uid, roles[r]])
    meta(a, counts)


def gen_xlsx(a):
    counts = {"valid": 0, "invalid": 0, "dup": 0, "roles": 0}
    strings, index = [], {}

    def sid(s):
        if s not in index:
            index[s] = len(strings)
            strings.append(s)
        return index[s]

    body, cells_n = [], 0

    def row(r, cells):
        nonlocal cells_n
        cs = "".join(f'<c r="{"ABC"[c]}{r}" t="s"><v>{sid(v)}</v></c>' for c, v in enumerate(cells) if v != "")
        cells_n += sum(1 for v in cells if v != "")
        body.append(f'<row r="{r}">{cs}</row>')

    row(1, ("email", "name", "roles"))
    for r, (email, name, roles, kind, role_l) in enumerate(rows(a.rows, a.seed, a.prefix), start=2):
        counts[kind] += 1
        counts["roles"] += len(role_l)
        row(r, (email, name, roles))
    last = len(body)
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    head = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    with zipfile.ZipFile(a.out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", head +
                   '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                   '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                   '<Default Extension="xml" ContentType="application/xml"/>'
                   f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
                   f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.worksheet+xml"/>'
                   f'<Override PartName="/xl/sharedStrings.xml" ContentType="{ct}.sharedStrings+xml"/>'
                   '</Types>')
        z.writestr("_rels/.rels", head +
                   '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                   f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/>'
                   '</Relationships>')
        z.writestr("xl/workbook.xml", head +
                   f'<workbook {ns} xmlns:r="{rel}"><sheets>'
                   '<sheet name="Users" sheetId="1" r:id="rId1"/></sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels", head +
                   '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                   f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
                   f'<Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/>'
                   '</Relationships>')
        z.writestr("xl/sharedStrings.xml", head +
                   f'<sst {ns} count="{cells_n}" uniqueCount="{len(strings)}">' +
                   "".join(f'<si><t xml:space="preserve">{escape(s)}</t></si>' for s in strings) + "</sst>")
        z.writestr("xl/worksheets/sheet1.xml", head +
                   f'<worksheet {ns}><dimension ref="A1:C{last}"/><sheetData>' + "".join(body) +
                   "</sheetData></worksheet>")
    meta(a, counts)


def meta(a, counts):
    m = {"rows": a.rows, "valid": counts["valid"], "invalid": counts["invalid"], "duplicates": counts["dup"],
         "role_grants": counts["roles"]}
    json.dump(m, open(a.meta, "w"))
    print(json.dumps(m), file=sys.stderr)


ap = argparse.ArgumentParser()
ap.add_argument("kind", choices=["csv", "xlsx"])
ap.add_argument("--rows", type=int, required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--meta", required=True)
ap.add_argument("--seed", type=int, default=13)
ap.add_argument("--prefix", default="")
ap.add_argument("--copy-project")
ap.add_argument("--roles", default="")
ap.add_argument("--copy-out")
args = ap.parse_args()
(gen_csv if args.kind == "csv" else gen_xlsx)(args)
