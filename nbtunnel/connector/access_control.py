"""Access control at the public URL, enforced by the connector so it holds on every edge.

Two schemes (`--auth`):
- `user:password`: HTTP Basic; a browser shows its login dialog.
- `token`: a random token, shown once. A visit with `?nbtunnel_token=T` sets an HttpOnly
  cookie and redirects to the same URL without it, so plain links work afterwards; API
  clients send `Authorization: Bearer T`.
Credentials are compared in constant time (`hmac.compare_digest`) and removed before the
request reaches the origin (the origin never sees nbtunnel's secret). Refusals are counted.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.httpmeta import HttpRequestHead

TOKEN_NAME = "nbtunnel_token"  # the query parameter and the cookie
REALM = "nbtunnel"


class AccessControlError(NbtunnelError, ValueError):
    """An --auth value that cannot be used."""


@dataclass(frozen=True)
class AuthSpec:
    """`basic` (user, password) or `token` (token)."""

    kind: str
    user: str = ""
    password: str = ""
    token: str = ""

    def __repr__(self) -> str:  # never show a secret in a traceback or a log line
        return f"AuthSpec(kind={self.kind!r}, user={self.user!r})"


def parse_auth(text: str) -> AuthSpec:
    """`token` (a fresh random token) or `user:password`."""
    if text == "token":
        return AuthSpec("token", token=secrets.token_urlsafe(24))
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise AccessControlError("expected USER:PASSWORD or the word `token`")
    if any(ord(c) < 32 for c in text):
        raise AccessControlError("user and password must not contain control characters")
    return AuthSpec("basic", user=user, password=password)


@dataclass(frozen=True)
class Refusal:
    """What the connector answers instead of the origin."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.body


class AccessControl:
    """Checks each request; `refused` counts the requests answered 401."""

    def __init__(self, spec: AuthSpec) -> None:
        self.spec = spec
        self.refused = 0
        if spec.kind == "basic":
            raw = f"{spec.user}:{spec.password}".encode()
            self._expected = b"Basic " + base64.b64encode(raw)
        else:
            self._expected = spec.token.encode()

    def check(self, head: HttpRequestHead) -> tuple[HttpRequestHead, Refusal | None]:
        """(the head to forward, with nbtunnel's credentials removed; a refusal or None)."""
        if self.spec.kind == "basic":
            return self._check_basic(head)
        return self._check_token(head)

    def _check_basic(self, head: HttpRequestHead) -> tuple[HttpRequestHead, Refusal | None]:
        ok = False
        for k, v in head.headers:
            if k.lower() == "authorization" and v.lower().startswith("basic "):
                ok = _same(_normalize_basic(v), self._expected)
        if not ok:
            return head, self._refuse(head, basic=True)
        return _without(head, lambda k, v: k.lower() == "authorization"), None

    def _check_token(self, head: HttpRequestHead) -> tuple[HttpRequestHead, Refusal | None]:
        parts = urlsplit(head.dest)
        query = parse_qsl(parts.query, keep_blank_values=True)
        offered = [v for k, v in query if k == TOKEN_NAME]
        if offered:
            if not _same(offered[-1].encode(), self._expected):
                return head, self._refuse(head, basic=False)
            rest = urlencode([(k, v) for k, v in query if k != TOKEN_NAME])
            location = urlunsplit(("", "", parts.path or "/", rest, parts.fragment))
            cookie = f"{TOKEN_NAME}={self.spec.token}; Path=/; HttpOnly; SameSite=Lax"
            return head, Refusal(303, [("Location", location), ("Set-Cookie", cookie),
                                       ("Content-Length", "0"),
                                       ("Cache-Control", "no-store")], b"")
        for k, v in head.headers:
            lk = k.lower()
            if lk == "authorization" and v[:7].lower() == "bearer " and _same(
                    v[7:].strip().encode(), self._expected):
                return _without(head, lambda k, v: k.lower() == "authorization"), None
            if lk == "cookie" and _same(_cookie(v).encode(), self._expected):
                return _strip_cookie(head), None
        return head, self._refuse(head, basic=False)

    def _refuse(self, head: HttpRequestHead, *, basic: bool) -> Refusal:
        self.refused += 1
        if basic:
            detail = "This tunnel is protected: log in with the user and password you were given."
            extra = [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')]
        else:
            detail = (f"This tunnel is protected: open the link with ?{TOKEN_NAME}=... you were "
                      "given (it sets a cookie), or send Authorization: Bearer <token>.")
            extra = [("WWW-Authenticate", f'Bearer realm="{REALM}"')]
        as_html = any(k.lower() == "accept" and "text/html" in v for k, v in head.headers)
        if as_html:
            body = ("<!doctype html><html><head><meta charset=utf-8><title>401 | Unauthorized"
                    "</title><style>body{font-family:system-ui,sans-serif;max-width:40em;"
                    "margin:4em auto;color:#222}small{color:#777}</style></head><body>"
                    f"<h1>401 Unauthorized</h1><p>{html.escape(detail)}</p>"
                    "<p><small>nbtunnel connector</small></p></body></html>\n").encode()
            ctype = "text/html; charset=utf-8"
        else:
            body = f"401 Unauthorized\n{detail}\n".encode()
            ctype = "text/plain; charset=utf-8"
        return Refusal(401, [*extra, ("Content-Type", ctype),
                             ("Content-Length", str(len(body))),
                             ("Cache-Control", "no-store")], body)


def _same(given: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(given, expected)


def _normalize_basic(value: str) -> bytes:
    """`Basic <b64>` with the scheme's case and the padding made canonical."""
    encoded = value.split(None, 1)[1].strip() if " " in value.strip() else ""
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""
    return b"Basic " + base64.b64encode(raw)


def _cookie(header: str) -> str:
    """nbtunnel's cookie in a Cookie header (parsed by hand: origins' cookies such as
    Jupyter's `_xsrf=2|..` are not all valid for http.cookies)."""
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_NAME:
            return value
    return ""


def _without(head: HttpRequestHead, drop: Callable[[str, str], bool]) -> HttpRequestHead:
    return replace(head, headers=[(k, v) for k, v in head.headers if not drop(k, v)])


def _strip_cookie(head: HttpRequestHead) -> HttpRequestHead:
    """The Cookie header(s) without nbtunnel's own cookie (the origin's cookies stay)."""
    out: list[tuple[str, str]] = []
    for k, v in head.headers:
        if k.lower() == "cookie":
            kept = [c for c in v.split(";") if c.strip().split("=", 1)[0] != TOKEN_NAME]
            if any(c.strip() for c in kept):
                out.append((k, ";".join(kept).strip()))
        else:
            out.append((k, v))
    return replace(head, headers=out)
