"""Schemathesis hooks of `./dev test`'s schemathesis step (.ci/schemathesis.sh).

JSON Schema cannot say everything the API requires. Where it cannot, the API's OpenAPI
document says it in words, the Rust suite tests the refusal, and this hook keeps generated
requests clear of it, so that a schema-valid request the API refuses still fails the run for
every other reason. It runs just before each request is sent (in every phase, after the
stateful phase has filled in values from earlier answers), and it only ever replaces a value
the schema allows by another value the schema allows: a value the schema forbids is left
alone, so a request meant to be refused stays one.

The rules the schema cannot hold, and what the hook does about each:

- `GET /api/v1/users`: `after` is a cursor the API issued, and it cannot be combined with a
  `page` other than 1. A generated `after` becomes a real cursor (ST_CURSOR), and a valid
  `page` beside it is dropped.
- `GET /api/v1/rules`: `after` is a cursor the API issued: a generated one becomes a real one
  (ST_RULES_CURSOR); the same for `GET /api/v1/webhook-endpoints` (ST_WEBHOOKS_CURSOR).
- `GET /api/v1/audit-logs` and its export: `to` is not before `from`. Reversed bounds are
  swapped.
- `POST /api/v1/jobs/ping`: `runAt` is at most JOB_MAX_DELAY_SECS ahead (ST_MAX_DELAY_SECS):
  a later one becomes a day from now.
- `POST /api/v1/events` and each event of a batch: `occurredAt` is at most an hour ahead (a
  later one becomes now), and the payload holds no NUL (Postgres cannot store it; removed from
  generated strings and keys); the same for the `data` of
  `POST /api/v1/notifications/{id}/webview-action`.
- `POST /api/v1/users/invite` and `POST /api/v1/users` (`roleIds`) and a rule's
  `targetRoleIds`: roles of the caller's project. Generated ids become the project's roles (ST_ROLE_IDS), as many as were generated.
- `POST /api/v1/rules`, `PUT /api/v1/rules/{id}`: `condition` compiles as CEL (a generated one
  becomes a valid condition); `title` and `body` compile as templates (the characters of
  template syntax, `{ } % # |`, are removed from generated text).
- `POST /api/v1/rules/test`: exactly one of `condition` and `ruleId`, and the condition
  compiles. A generated condition becomes a valid one and a valid `ruleId` beside it is
  dropped; a request with neither gets the condition.
- `POST /api/v1/webhook-endpoints`, `PUT /api/v1/webhook-endpoints/{id}`: `url` parses as a
  URL (a pattern-valid `http://a:99999` or a host of control characters does not) and, unless WEBHOOK_ALLOW_PRIVATE (which the
  step sets), its host resolves to public addresses. A generated URL becomes
  `http://127.0.0.1:9/comet-hook` (the discard port: a test message finds nothing listening).
- `POST /api/v1/projects/{id}/api-keys`: `expiresAt` is in the future and at most 10 years
  ahead; one outside becomes 30 days from now.
- `PUT /api/v1/users/me/notification-preferences`: `quietHours.timeZone` is an IANA zone name
  (a generated one becomes `Europe/Paris`) and `quietHours.end` differs from its `start` (an
  equal one moves an hour on).
- `/api/v1/notifications/{id}/…`: the stateful phase infers links from the stream ticket's
  `url` (`/api/v1/notifications/stream?ticket=…`) and takes `stream` for an `{id}`; a static
  sibling segment standing in for an id becomes a random id (a 404).
- `GET /api/v1/notifications/stream`: a browser sends `?ticket=`, anything else the
  `Authorization` header, never both (`400`); every caller of the run sends the header, so a
  generated `ticket` is dropped.

- Every new password (`password` of `POST /api/v1/invitations/accept`, of `POST /api/v1/users`
  and of `POST /api/v1/auth/password-reset/confirm`, `newPassword` of
  `POST /api/v1/auth/change-password`) passes the password policy: not one character repeated,
  not on the list of common passwords (shared/src/domain/common-passwords.txt, read here), and
  a new password differs from the current one. A schema-valid password the policy refuses
  becomes a strong one of the same schema.
- `/api/v1/transfer-buckets…`: an amount may have no more decimal places than the bucket's
  currency (JPY none), an opening balance is negative only with `allowNegative`, a movement's
  amount is above zero, and no balance reaches 10^15. A generated amount loses its decimals
  and keeps at most 9 digits (a movement's zero becomes `1`; an opening balance's `-` goes
  unless `allowNegative` is true). The lists' `after` is a cursor the API issued: a generated
  one becomes empty (no cursor).

- `/api/v1/users/{id}/roles/{roleId}`: the stateful phase follows a link from
  `POST /api/v1/users/{id}/roles` and fills `{roleId}` with the user's id; it becomes the role
  that request gave the user (and a new role `PATCH` names by the user's id becomes another
  role of the project).
- `POST /api/v1/users/imports`: the body is any bytes to the schema, but an importable file is
  a CSV or XLSX with an email column: a generated body becomes a one-row CSV (a fresh email),
  generated column mappings (headers the file does not have) are dropped, and generated
  `defaultRoleIds` become one of the project's roles (parts generated to break the schema are
  left alone).
- `POST /api/v1/users/bulk`: exactly one of `userIds` and `filter` (a second is dropped; with
  neither, a filter matching nobody is added), `roleId` exactly for `add-role`/`remove-role`
  (dropped for the others; for them, one of the project's roles). The imports list's, the bulk results'
  and the job search's (`GET /api/v1/jobs`) `after` are cursors the API issued: a generated one
  becomes empty.

And one that keeps the run able to test anything: the users whose tokens the run uses
(ST_PROTECTED_USERS) are never deactivated nor have their roles changed (either revokes every
token of the user); a request naming one of them names a random id instead (a 404). The same
for their roles (ST_ROLE_IDS, the built-in `admin` role among them) in `PUT` and `DELETE
/api/v1/roles/{id}`: changing a role's permissions revokes its holders' tokens, and the admin
role refuses to lose `role:*`/`user:*` (a `422` the schema cannot state). A bulk action
(`POST /api/v1/users/bulk`) naming them by id names random ids instead, and one that takes
something away (deactivate, delete, remove-role) by filter gets a `search` that matches nobody.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid

import schemathesis

_ROLE_IDS = [r for r in os.environ.get("ST_ROLE_IDS", "").split(",") if r]
_PROTECTED = {u.lower() for u in os.environ.get("ST_PROTECTED_USERS", "").split(",") if u}
_CURSOR = os.environ.get("ST_CURSOR", "")
_RULES_CURSOR = os.environ.get("ST_RULES_CURSOR", "")
_WEBHOOKS_CURSOR = os.environ.get("ST_WEBHOOKS_CURSOR", "")
_MAX_DELAY = dt.timedelta(seconds=int(os.environ.get("ST_MAX_DELAY_SECS", "7776000")))
# compiles, and evaluates without an error on every event
_CONDITION = 'event.type != ""'
_TEMPLATE_SYNTAX = str.maketrans("", "", "{}%#|")
_WEBHOOK_URL = "http://127.0.0.1:9/comet-hook"
# The schema's `^https?://[^\s@/?#]+([/?#]\S*)?$` as schemathesis's validator reads it: `\s` is
# Unicode White_Space there, while Python's `\s` also takes the controls \x1c-\x1f.
_WS = "\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WEBHOOK_URL_PATTERN = re.compile(rf"^https?://[^{_WS}@/?#]+([/?#][^{_WS}]*)?$")

_NOTIFICATION_SIBLINGS = ("stream", "stream-ticket", "unread-count", "acknowledge-all")

_USER_WRITES = (
    "/api/v1/users/{id}/deactivate",
    "/api/v1/users/{id}/roles",
    "/api/v1/users/{id}/roles/{roleId}",
)


def _instant(value: object) -> dt.datetime | None:
    """A valid RFC 3339 `date-time` string as an aware datetime; None for anything else."""
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt":
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _stamp(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_text(value: object, low: int, high: int) -> bool:
    """A string the schema allows: `low` to `high` characters, no NUL."""
    return isinstance(value, str) and low <= len(value) <= high and "\x00" not in value


def _is_page(value: object) -> bool:
    try:
        return 1 <= int(value) <= 4294967295 and str(int(value)) == str(value)
    except (TypeError, ValueError):
        return False


def _without_nul(value):
    """A JSON value with every NUL removed from its strings and keys."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {k.replace("\x00", ""): _without_nul(v) for k, v in value.items()}
    return value


_AMOUNT = re.compile(r"^-?[0-9]{1,15}(\.[0-9]{1,4})?$")
_BUCKET_LISTS = (
    "/api/v1/transfer-buckets",
    "/api/v1/transfer-buckets/{id}/transactions",
    "/api/v1/users/imports",
    "/api/v1/users/bulk/{id}/results",
    "/api/v1/jobs",
)
# the role each user was last given by `POST /api/v1/users/{id}/roles` in this run
_GIVEN_ROLES: dict[str, str] = {}
_IMPORT_COLUMNS = ("emailColumn", "nameColumn", "rolesColumn", "statusColumn")
# bulk actions that take something away from users
_BULK_TAKING = ("deactivate", "delete", "remove-role")


def _fix_amount(body: dict, field: str, *, positive: bool = False, signed: bool = False) -> None:
    """An amount the schema allows, made valid for every currency and bounded (see above)."""
    value = body.get(field)
    if not isinstance(value, str) or not _AMOUNT.match(value):
        return
    negative = value.startswith("-") and signed
    digits = str(int(value.lstrip("-").split(".")[0]) % 10**9)
    if positive and digits == "0":
        digits = "1"
    body[field] = ("-" if negative and digits != "0" else "") + digits


def _fix_event(event: dict, now: dt.datetime) -> None:
    occurred = _instant(event.get("occurredAt"))
    if occurred is not None and occurred > now + dt.timedelta(minutes=50):
        event["occurredAt"] = _stamp(now)
    if isinstance(event.get("payload"), dict):
        event["payload"] = _without_nul(event["payload"])


def _real_roles(body: dict, field: str) -> None:
    ids = body.get(field)
    if _ROLE_IDS and isinstance(ids, list) and all(_is_uuid(i) for i in ids):
        body[field] = [_ROLE_IDS[n % len(_ROLE_IDS)] for n in range(len(ids))]


def _fix_rule(body: dict) -> None:
    if _is_text(body.get("condition"), 1, 2000):
        body["condition"] = _CONDITION
    title = body.get("title")
    if _is_text(title, 1, 200) and title.strip():
        stripped = title.translate(_TEMPLATE_SYNTAX)
        body["title"] = stripped if stripped.strip() else "Title"
    if _is_text(body.get("body"), 0, 4000):
        body["body"] = body["body"].translate(_TEMPLATE_SYNTAX)
    _real_roles(body, "targetRoleIds")


def _fix_rule_test(body: dict) -> None:
    condition, rule_id = body.get("condition"), body.get("ruleId")
    if _is_text(condition, 1, 2000):
        body["condition"] = _CONDITION
        if rule_id is None or _is_uuid(rule_id):
            body.pop("ruleId", None)
    elif condition is None and rule_id is None:
        body.pop("ruleId", None)
        body["condition"] = _CONDITION


_COMMON_PASSWORDS_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "shared", "src", "domain", "common-passwords.txt"
)
with open(_COMMON_PASSWORDS_FILE, encoding="utf-8") as _f:
    _COMMON = {
        line.strip().lower() for line in _f if line.strip() and not line.startswith("#")
    }
_STRONG_PASSWORD = "schemathesis strong passphrase 7f"


def _fix_password(body: dict, field: str, other: str | None = None) -> None:
    """Replaces a schema-valid password the policy refuses (see the module doc)."""
    value = body.get(field)
    if not isinstance(value, str) or not 12 <= len(value) <= 128 or "\0" in value:
        return
    refused = len(set(value)) == 1 or value.strip().lower() in _COMMON
    if refused or (other is not None and body.get(other) == value):
        body[field] = _STRONG_PASSWORD if body.get(other) != _STRONG_PASSWORD else _STRONG_PASSWORD + "!"


def _negative(case, location: str) -> bool:
    """Whether schemathesis generated this part of the request to break the schema (left alone)."""
    meta = getattr(case, "meta", None)
    if meta is None:
        return False
    return any(getattr(loc, "value", loc) == location and info.mode.is_negative for loc, info in meta.components.items())


def _fix_import(case, query: dict | None) -> None:
    """An upload: any bytes are schema-valid, an importable file is a CSV with an email column."""
    csv = f"email\nst-{uuid.uuid4().hex[:12]}@example.com\n"
    if _negative(case, "body"):
        pass
    elif isinstance(case.body, str):
        case.body = csv
    elif isinstance(case.body, (bytes, bytearray)):
        case.body = csv.encode()
    elif isinstance(case.body, dict) and isinstance(case.body.get("file"), (str, bytes, bytearray)):
        # text: the form's schema says `string` (binary), which a bytes value does not match
        case.body["file"] = csv
    if query is None or _negative(case, "query"):
        return
    for name in _IMPORT_COLUMNS:
        value = query.get(name)
        if isinstance(value, str) and len(value) <= 200:
            del query[name]
    if isinstance(query.get("defaultRoleIds"), str):
        query["defaultRoleIds"] = ",".join(_ROLE_IDS[:1])


def _fix_bulk(case, body: dict) -> None:
    """A bulk action never takes anything from the run's own users (protected ids become random
    ones; a filter that could match them matches nobody). A schema-valid body also names its
    users one way (`userIds` or `filter`), a `roleId` exactly for the role actions, and a role of
    the project. A body generated to break the schema is left alone (the API refuses it)."""
    if _negative(case, "body"):
        return
    ids = body.get("userIds")
    if isinstance(ids, list):
        body["userIds"] = [str(uuid.uuid4()) if isinstance(u, str) and u.lower() in _PROTECTED else u for u in ids]
    if body.get("action") in _BULK_TAKING and isinstance(body.get("filter"), dict):
        body["filter"]["search"] = "st-nobody-matches-this"
    ids, filters = body.get("userIds"), body.get("filter")
    if isinstance(ids, list) and ids:
        body.pop("filter", None)
    elif isinstance(filters, dict):
        body.pop("userIds", None)
    else:
        body.pop("userIds", None)
        body["filter"] = {"search": "st-nobody-matches-this"}
    if body.get("action") in ("add-role", "remove-role"):
        if _ROLE_IDS and (not isinstance(body.get("roleId"), str) or body["roleId"] not in _ROLE_IDS):
            body["roleId"] = _ROLE_IDS[-1]
    elif "roleId" in body:
        del body["roleId"]


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    method = case.operation.method.upper()
    query = case.query if isinstance(case.query, dict) else None
    body = case.body if isinstance(case.body, dict) else None
    now = dt.datetime.now(dt.timezone.utc)

    if path in _USER_WRITES and isinstance(case.path_parameters, dict):
        user = case.path_parameters.get("id")
        if isinstance(user, str) and user.lower() in _PROTECTED:
            case.path_parameters["id"] = str(uuid.uuid4())

    if path == "/api/v1/roles/{id}" and method in ("PUT", "DELETE") and isinstance(case.path_parameters, dict):
        role = case.path_parameters.get("id")
        if isinstance(role, str) and role.lower() in {r.lower() for r in _ROLE_IDS}:
            case.path_parameters["id"] = str(uuid.uuid4())

    if path == "/api/v1/users/{id}/roles" and method == "POST" and isinstance(case.body, dict):
        user, role = (case.path_parameters or {}).get("id"), case.body.get("roleId")
        if isinstance(user, str) and isinstance(role, str):
            _GIVEN_ROLES[user.lower()] = role
    if path == "/api/v1/users/{id}/roles/{roleId}" and isinstance(case.path_parameters, dict):
        user, role = case.path_parameters.get("id"), case.path_parameters.get("roleId")
        if isinstance(user, str) and role == user and user.lower() in _GIVEN_ROLES:
            case.path_parameters["roleId"] = _GIVEN_ROLES[user.lower()]
        # the same link fills the new role of `PATCH` with the user's id too
        if isinstance(user, str) and isinstance(case.body, dict) and case.body.get("roleId") == user:
            others = [r for r in _ROLE_IDS if r != case.path_parameters.get("roleId")]
            if others:
                case.body["roleId"] = others[0]

    if path.startswith("/api/v1/notifications/{id}") and isinstance(case.path_parameters, dict):
        if case.path_parameters.get("id") in _NOTIFICATION_SIBLINGS:
            case.path_parameters["id"] = str(uuid.uuid4())

    if path == "/api/v1/notifications/stream" and query is not None:
        query.pop("ticket", None)

    if method == "GET" and query is not None:
        after = query.get("after")
        if path == "/api/v1/users" and _CURSOR and isinstance(after, str) and after:
            query["after"] = _CURSOR
            if _is_page(query.get("page")):
                del query["page"]
        if path == "/api/v1/rules" and _RULES_CURSOR and isinstance(after, str) and after:
            query["after"] = _RULES_CURSOR
        if path == "/api/v1/webhook-endpoints" and _WEBHOOKS_CURSOR and isinstance(after, str) and after:
            query["after"] = _WEBHOOKS_CURSOR
        if path in _BUCKET_LISTS and isinstance(after, str) and after:
            query["after"] = ""
        if path.startswith("/api/v1/audit-logs"):
            start, end = _instant(query.get("from")), _instant(query.get("to"))
            if start is not None and end is not None and start > end:
                query["from"], query["to"] = query["to"], query["from"]

    if path == "/api/v1/users/imports" and method == "POST":
        _fix_import(case, query)
    if path == "/api/v1/users/bulk" and body is not None:
        _fix_bulk(case, body)

    if body is None or method not in ("POST", "PUT"):
        return
    if path == "/api/v1/jobs/ping":
        run_at = _instant(body.get("runAt"))
        # a margin below the horizon: the request takes a moment to arrive
        if run_at is not None and run_at > now + _MAX_DELAY - dt.timedelta(hours=1):
            body["runAt"] = _stamp(now + dt.timedelta(days=1))
    elif path == "/api/v1/events":
        _fix_event(body, now)
    elif path == "/api/v1/events/batch" and isinstance(body.get("events"), list):
        for event in body["events"]:
            if isinstance(event, dict):
                _fix_event(event, now)
    elif path == "/api/v1/users/invite":
        _real_roles(body, "roleIds")
    elif path == "/api/v1/users":
        _real_roles(body, "roleIds")
        _fix_password(body, "password")
    elif path == "/api/v1/notifications/{id}/webview-action":
        if isinstance(body.get("data"), dict):
            body["data"] = _without_nul(body["data"])
    elif path in ("/api/v1/invitations/accept", "/api/v1/auth/password-reset/confirm"):
        _fix_password(body, "password")
    elif path == "/api/v1/auth/change-password":
        _fix_password(body, "newPassword", "currentPassword")
    elif path in ("/api/v1/rules", "/api/v1/rules/{id}"):
        _fix_rule(body)
    elif path == "/api/v1/rules/test":
        _fix_rule_test(body)
    elif path in ("/api/v1/webhook-endpoints", "/api/v1/webhook-endpoints/{id}"):
        url = body.get("url")
        # the schema's pattern lets control characters through (NUL too): any URL it allows
        # is replaced, whatever it holds
        if isinstance(url, str) and 8 <= len(url) <= 2048 and _WEBHOOK_URL_PATTERN.match(url):
            body["url"] = _WEBHOOK_URL
    elif path == "/api/v1/users/me/notification-preferences":
        quiet = body.get("quietHours")
        if isinstance(quiet, dict):
            if isinstance(quiet.get("timeZone"), str):
                quiet["timeZone"] = "Europe/Paris"
            start, end = quiet.get("start"), quiet.get("end")
            if isinstance(start, str) and start == end and len(start) == 5:
                quiet["end"] = f"{(int(start[:2]) + 1) % 24:02d}{start[2:]}"
    elif path == "/api/v1/transfer-buckets":
        _fix_amount(body, "initialBalance", signed=body.get("allowNegative") is True)
        _fix_amount(body, "lowBalanceThreshold")
        _fix_amount(body, "rearmMargin")
    elif path == "/api/v1/transfer-buckets/{id}/threshold":
        _fix_amount(body, "lowBalanceThreshold")
        _fix_amount(body, "rearmMargin")
    elif path == "/api/v1/transfer-buckets/{id}/transactions":
        _fix_amount(body, "amount", positive=True)
    elif path == "/api/v1/projects/{id}/api-keys":
        expires = _instant(body.get("expiresAt"))
        if expires is not None and not now < expires < now + dt.timedelta(days=3650):
            body["expiresAt"] = _stamp(now + dt.timedelta(days=30))
