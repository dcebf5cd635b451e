"""Access control at the public URL (unit level; tests/notebook/test_jupyter.py has it live)."""

from __future__ import annotations

import base64

import pytest

from nbtunnel.connector.access_control import (
    AccessControl,
    AccessControlError,
    parse_auth,
)
from nbtunnel.connector.origin_parts import _DROP, _forward
from nbtunnel.core.httpmeta import HttpRequestHead


def _head(dest: str = "/x", headers: list[tuple[str, str]] | None = None) -> HttpRequestHead:
    return HttpRequestHead("GET", "pub.localhost:8080", dest, headers or [], False)


def _basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_basic_accepts_the_right_pair_and_strips_it() -> None:
    ac = AccessControl(parse_auth("me:s3cret:with:colons"))
    head, refusal = ac.check(_head(headers=[("Authorization", _basic("me", "s3cret:with:colons")),
                                            ("Accept", "*/*")]))
    assert refusal is None and head.headers == [("Accept", "*/*")]
    for wrong in (_basic("me", "nope"), _basic("you", "s3cret:with:colons"), "Basic !!!", "x"):
        _, refusal = ac.check(_head(headers=[("Authorization", wrong)]))
        assert refusal is not None and refusal.status == 401
        assert ("WWW-Authenticate", 'Basic realm="nbtunnel", charset="UTF-8"') in refusal.headers
    _, refusal = ac.check(_head())
    assert refusal is not None and ac.refused == 5


def test_token_link_sets_a_cookie_then_cookie_and_bearer_work() -> None:
    ac = AccessControl(parse_auth("token"))
    token = ac.spec.token
    assert len(token) >= 32 and token not in repr(ac.spec)
    _, refusal = ac.check(_head(f"/lab?a=1&nbtunnel_token={token}"))
    assert refusal is not None and refusal.status == 303
    headers = dict(refusal.headers)
    assert headers["Location"] == "/lab?a=1"
    assert headers["Set-Cookie"].startswith(f"nbtunnel_token={token};")
    assert "HttpOnly" in headers["Set-Cookie"]
    head, refusal = ac.check(_head(headers=[("Cookie", f"_xsrf=2|ab|cd; nbtunnel_token={token}")]))
    assert refusal is None and head.headers == [("Cookie", "_xsrf=2|ab|cd")]
    head, refusal = ac.check(_head(headers=[("Authorization", f"Bearer {token}")]))
    assert refusal is None and head.headers == []
    assert ac.refused == 0


def test_token_refusals_are_401_pages_and_counted() -> None:
    ac = AccessControl(parse_auth("token"))
    for head in (_head(), _head("/?nbtunnel_token=wrong"),
                 _head(headers=[("Cookie", "nbtunnel_token=wrong")]),
                 _head(headers=[("Authorization", "Bearer wrong"), ("Accept", "text/html")])):
        _, refusal = ac.check(head)
        assert refusal is not None and refusal.status == 401
    assert ac.refused == 4
    assert b"<h1>401 Unauthorized</h1>" in refusal.body
    assert dict(refusal.headers)["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("bad", ["", "user", "user:", ":pw", "a:b\nc"])
def test_bad_auth_values(bad: str) -> None:
    with pytest.raises(AccessControlError):
        parse_auth(bad)


def test_host_header_rewrites_a_matching_origin_only() -> None:
    head = _head(headers=[("Origin", "http://pub.localhost:8080"),
                          ("Referer", "http://pub.localhost:8080/lab/tree?x=1")])
    out = dict(_forward(head, _DROP, "localhost:8888"))
    assert out["Host"] == "localhost:8888"
    assert out["Origin"] == "http://localhost:8888"
    assert out["Referer"] == "http://localhost:8888/lab/tree?x=1"
    assert out["X-Forwarded-Host"] == "pub.localhost:8080"
    other = _head(headers=[("Origin", "http://evil.example")])
    assert dict(_forward(other, _DROP, "localhost:8888"))["Origin"] == "http://evil.example"
    assert dict(_forward(head, _DROP, None))["Origin"] == "http://pub.localhost:8080"
