"""Schemathesis hooks of `./dev test`'s schemathesis step (.ci/schemathesis.sh).

JSON Schema cannot say everything the API requires. Where it cannot, the API's OpenAPI
document says it in words, the Rust suite tests the refusal, and these hooks keep generated
requests clear of it, so that a schema-valid request the API refuses still fails the run for
every other reason. Each hook changes a request only in the way its comment says, and only
where the value it replaces is already schema-valid (a schema-violating value is left alone,
so negative cases stay negative). Schemathesis re-validates a changed request against the
schema before it checks the answer.

The rules the schema cannot hold:

- `GET /api/v1/users`: `after` is an opaque cursor the API issued (`meta.nextCursor`), and it
  cannot be combined with a `page` other than 1. A generated `after` is replaced by a real
  cursor (ST_CURSOR) and `page` is dropped beside it.
- `GET /api/v1/audit-logs` and its export: `to` is not before `from`. Reversed bounds are
  swapped.
- `POST /api/v1/jobs/ping`: `runAt` is at most JOB_MAX_DELAY_SECS ahead (ST_MAX_DELAY_SECS).
  A later one is brought forward to a day from now.
- `POST /api/v1/users/invite`: `roleIds` are roles of the caller's project. Generated ids are
  replaced by the project's roles (ST_ROLE_IDS), keeping their number.

And one that keeps the run able to test anything: the users whose tokens the run uses
(ST_PROTECTED_USERS) are never deactivated nor have their roles changed (either revokes
every token of the user); a request naming one of them names a random id instead (a 404).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import schemathesis

_ROLE_IDS = [r for r in os.environ.get("ST_ROLE_IDS", "").split(",") if r]
_PROTECTED = {u.lower() for u in os.environ.get("ST_PROTECTED_USERS", "").split(",") if u}
_CURSOR = os.environ.get("ST_CURSOR", "")
_MAX_DELAY = dt.timedelta(seconds=int(os.environ.get("ST_MAX_DELAY_SECS", "7776000")))

_USER_WRITES = (
    "/api/v1/users/{id}/deactivate",
    "/api/v1/users/{id}/roles",
    "/api/v1/users/{id}/roles/{roleId}",
)


def _instant(value: object) -> dt.datetime | None:
    """An RFC 3339 `date-time` string as an aware datetime; None for anything else."""
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt":
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@schemathesis.hook
def map_case(context, case):
    path = case.operation.path
    method = case.operation.method.upper()
    query = case.query if isinstance(case.query, dict) else None
    body = case.body if isinstance(case.body, dict) else None

    if path == "/api/v1/users" and query is not None and _CURSOR:
        after = query.get("after")
        if isinstance(after, str) and after != "":
            query["after"] = _CURSOR
            query.pop("page", None)

    if path.startswith("/api/v1/audit-logs") and query is not None:
        start, end = _instant(query.get("from")), _instant(query.get("to"))
        if start is not None and end is not None and start > end:
            query["from"], query["to"] = query["to"], query["from"]

    if path == "/api/v1/jobs/ping" and method == "POST" and body is not None:
        run_at = _instant(body.get("runAt"))
        now = dt.datetime.now(dt.timezone.utc)
        # a margin below the horizon: the request takes a moment to arrive
        if run_at is not None and run_at > now + _MAX_DELAY - dt.timedelta(hours=1):
            body["runAt"] = (now + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    if path == "/api/v1/users/invite" and body is not None and _ROLE_IDS:
        ids = body.get("roleIds")
        if isinstance(ids, list) and all(_is_uuid(i) for i in ids):
            body["roleIds"] = [_ROLE_IDS[n % len(_ROLE_IDS)] for n in range(len(ids))]

    return case


@schemathesis.hook
def before_call(context, case, kwargs):
    # also covers ids the stateful phase takes from earlier answers (GET /users/me)
    if case.operation.path in _USER_WRITES and isinstance(case.path_parameters, dict):
        user = case.path_parameters.get("id")
        if isinstance(user, str) and user.lower() in _PROTECTED:
            case.path_parameters["id"] = str(uuid.uuid4())
