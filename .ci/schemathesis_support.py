"""Helpers of .ci/schemathesis.sh, run with the schemathesis virtualenv's Python.

    schemathesis_support.py fixtures BASE_URL EMAIL PASSWORD
        Logs the seeded admin user in (twice: one token for the run, one for its logout
        operation), invites a second user and creates two rules and two webhook endpoints so
        the user, rule and endpoint lists have a next page, and prints shell assignments:
        ST_USER_TOKEN, ST_USER_LOGOUT_TOKEN, ST_PROTECTED_USERS, ST_ROLE_IDS, ST_CURSOR,
        ST_RULES_CURSOR, ST_WEBHOOKS_CURSOR.

    schemathesis_support.py purge-redis REDIS_URL PREFIX
        Deletes every key under `PREFIX:` (the run's own prefix).
"""

from __future__ import annotations

import shlex
import socket
import sys
import urllib.parse

import requests


def _call(method: str, url: str, token: str | None = None, **kwargs) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.request(method, url, headers=headers, timeout=30, **kwargs)
    if resp.status_code >= 300:
        sys.exit(f"{method} {url} answered {resp.status_code}: {resp.text}")
    return resp.json()


def fixtures(base: str, email: str, password: str) -> None:
    credentials = {"email": email, "password": password}
    login = _call("POST", f"{base}/api/v1/auth/login", json=credentials)["data"]
    token = login["accessToken"]
    logout_token = _call("POST", f"{base}/api/v1/auth/login", json=credentials)["data"]["accessToken"]
    me = login["user"]
    user_id = me["id"]
    role_ids = [role["id"] for role in me["roles"]]
    _call(
        "POST",
        f"{base}/api/v1/users/invite",
        token,
        json={"email": "second@example.com", "name": "Second", "roleIds": role_ids},
    )
    page = _call("GET", f"{base}/api/v1/users?perPage=1", token)
    cursor = page["meta"]["nextCursor"]
    if not cursor:
        sys.exit(f"the user list has no next page: {page}")
    for name in ("First rule", "Second rule"):
        rule = {"name": name, "eventTypes": ["fixture.*"], "title": name, "channels": ["inApp"]}
        _call("POST", f"{base}/api/v1/rules", token, json=rule)
    rules = _call("GET", f"{base}/api/v1/rules?limit=1", token)
    rules_cursor = rules["meta"]["nextCursor"]
    if not rules_cursor:
        sys.exit(f"the rule list has no next page: {rules}")
    for name in ("first", "second"):
        endpoint = {"url": f"http://127.0.0.1:9/{name}", "description": name}
        _call("POST", f"{base}/api/v1/webhook-endpoints", token, json=endpoint)
    endpoints = _call("GET", f"{base}/api/v1/webhook-endpoints?limit=1", token)
    webhooks_cursor = endpoints["meta"]["nextCursor"]
    if not webhooks_cursor:
        sys.exit(f"the webhook endpoint list has no next page: {endpoints}")
    values = {
        "ST_USER_TOKEN": token,
        "ST_USER_LOGOUT_TOKEN": logout_token,
        "ST_PROTECTED_USERS": user_id,
        "ST_ROLE_IDS": ",".join(role_ids),
        "ST_CURSOR": cursor,
        "ST_RULES_CURSOR": rules_cursor,
        "ST_WEBHOOKS_CURSOR": webhooks_cursor,
    }
    for name, value in values.items():
        print(f"{name}={shlex.quote(value)}")


def _resp_command(*args: str | bytes) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Redis:
    """Just enough RESP to SCAN and UNLINK (redis-cli may not be installed)."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "redis":
            sys.exit(f"purge-redis handles redis:// URLs only, not {parsed.scheme}://")
        self.sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=10)
        self.file = self.sock.makefile("rb")
        if parsed.password is not None:
            user = urllib.parse.unquote(parsed.username or "default")
            self.call("AUTH", user, urllib.parse.unquote(parsed.password))
        db = parsed.path.lstrip("/")
        if db:
            self.call("SELECT", db)

    def call(self, *args: str | bytes):
        self.sock.sendall(_resp_command(*args))
        return self._read()

    def _read(self):
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            # keys stay bytes: a key need not be UTF-8
            return self.file.read(size + 2)[:-2]
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")


def purge_redis(url: str, prefix: str) -> None:
    redis = _Redis(url)
    cursor, deleted = b"0", 0
    while True:
        cursor, keys = redis.call("SCAN", cursor, "MATCH", f"{prefix}:*", "COUNT", "1000")
        if keys:
            redis.call("DEL", *keys)
            deleted += len(keys)
        if cursor == b"0":
            break
    print(f"deleted {deleted} Redis keys under {prefix}:")


def main() -> None:
    command, *args = sys.argv[1:] or [""]
    if command == "fixtures" and len(args) == 3:
        fixtures(*args)
    elif command == "purge-redis" and len(args) == 2:
        purge_redis(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
