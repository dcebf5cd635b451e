"""JSON plumbing for the control-plane API: envelopes, typed request errors, body checks.

Every answer uses Cloudflare's v4 envelope (`success`, `result`, `errors`, `messages`) so a
client handles one shape; every refusal is an `ApiError` carrying the HTTP status and a message
that says what to fix.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from nbtunnel.core.errors import NbtunnelError

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]
JSON_HEADERS: Headers = [(b"Content-Type", b"application/json")]
MAX_JSON_BODY = 256 * 1024
MAX_JSON_DEPTH = 64  # json.loads recurses per level: 100,000 `[` raised RecursionError
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class ApiError(NbtunnelError):
    """A refused API request: HTTP status and a clear message (never a secret)."""

    def __init__(self, status: int, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def ok(result: object, status: int = 200) -> Answer:
    doc = {"success": True, "result": result, "errors": [], "messages": []}
    return status, list(JSON_HEADERS), json.dumps(doc).encode()


def fail(exc: ApiError) -> Answer:
    doc = {"success": False, "result": None, "messages": [],
           "errors": [{"code": exc.status, "message": exc.message}]}
    return exc.status, [*JSON_HEADERS, *exc.headers], json.dumps(doc).encode()


def parse_body(body: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or an ApiError saying what is wrong with it."""
    if len(body) > MAX_JSON_BODY:
        raise ApiError(413, f"request body is {len(body)} bytes; the limit is {MAX_JSON_BODY}")
    if not body.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "request body is empty; send a JSON object")
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise ApiError(400, f"JSON nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ApiError(400, f"expected a JSON object, got {type(doc).__name__}")
    return doc


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays/objects in `body` (brackets inside strings do not count), in
    linear time and without recursion; an upper bound for malformed input."""
    brackets = _JSON_STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)
    steps = (1 if b in b"[{" else -1 for b in brackets)
    return max(itertools.accumulate(steps, initial=0))


def check_fields(doc: dict[str, Any], *, required: dict[str, type | tuple[type, ...]],
                 optional: dict[str, type | tuple[type, ...]] | None = None) -> None:
    """Refuse unknown fields, missing required ones and wrong JSON types."""
    optional = optional or {}
    unknown = sorted(set(doc) - set(required) - set(optional))
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}; allowed: "
                       f"{', '.join(sorted({*required, *optional}))}")
    for name, kind in {**required, **optional}.items():
        if name not in doc:
            if name in required:
                raise ApiError(400, f"missing required field {name!r}")
            continue
        value, kinds = doc[name], _tuple(kind)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = "/".join(t.__name__ for t in kinds)
            raise ApiError(400, f"field {name!r} must be {expected}, "
                           f"got {type(value).__name__}")


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def check_remote_config(config: dict[str, Any]) -> None:
    """Structural checks the edge can make; the connector validates services and regexes and
    answers with its own error, which the API relays."""
    allowed = {"ingress", "warp-routing", "originRequest"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ApiError(400, f"config: unknown key(s) {', '.join(unknown)}; allowed: "
                       f"{', '.join(sorted(allowed))}")
    rules = config.get("ingress")
    if not isinstance(rules, list) or not rules:
        raise ApiError(400, "config.ingress must be a non-empty list of rules")
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise ApiError(400, f"config.ingress rule #{i + 1} must be an object")
        if not isinstance(rule.get("service"), str) or not rule["service"]:
            raise ApiError(400, f"config.ingress rule #{i + 1} has no service")
    last = rules[-1]
    if last.get("hostname") not in (None, "", "*") or last.get("path"):
        raise ApiError(400, "config.ingress: the last rule must match all URLs (no hostname "
                       "or path filter)")
