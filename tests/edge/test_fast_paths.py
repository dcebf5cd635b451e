"""The request path's one-pass functions against the plain rules they replace.

`forwarded_request` (one pass over the visitor's headers) and `check_connect_response` (one
pass over the connector's metadata for the usual head) must give exactly what the step by
step reference gives: the reference implementations below are the rules as written in
docs/refusals.md, checked on generated header lists full of the names that matter.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nbtunnel.core.errors import DecodeError, NbtunnelError
from nbtunnel.core.http1 import HOP_BY_HOP, connection_nominated
from nbtunnel.core.httpmeta import build_connect_request, parse_http_response, request_has_body
from nbtunnel.core.streams import ConnectionType, ConnectRequest, ConnectResponse
from nbtunnel.edge.forwarding import RESERVED, forwarded_request, metadata_size
from nbtunnel.edge.request_reader import Request
from nbtunnel.edge.response_check import (
    BadResponseError,
    CheckedHead,
    check_connect_response,
    check_response_head,
)

# -------------------------------------------------------------------------------- reference


def _reference_forwarded(headers: list[tuple[bytes, bytes]], *, client_ip: str, ray: str,
                         scheme: str) -> list[tuple[str, str]]:
    text = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in headers]
    drop = ((HOP_BY_HOP - {"transfer-encoding"}) | connection_nominated(text)
            | {"expect", "x-forwarded-for"})
    out: list[tuple[str, str]] = []
    chain: list[str] = []
    for name, value in text:
        lname = name.lower()
        if lname == "x-forwarded-for":
            chain += [hop.strip() for hop in value.split(",") if hop.strip()]
        if lname in drop or lname.replace("_", "-") in RESERVED:
            continue
        out.append((name, value))
    out.append(("Cf-Connecting-Ip", client_ip))
    out.append(("X-Forwarded-For", ", ".join([*chain, client_ip])))
    out.append(("X-Forwarded-Proto", scheme))
    out.append(("Cf-Visitor", f'{{"scheme":"{scheme}"}}'))
    out.append(("Cf-Ray", ray))
    return out


def _reference_request(req: Request) -> tuple[ConnectRequest, bool, bool]:
    headers = _reference_forwarded(req.headers, client_ip=req.client_ip, ray=req.ray,
                                   scheme=req.scheme)
    request = build_connect_request(req.method, req.host, req.target, headers,
                                    scheme=req.scheme, websocket=req.upgrade)
    expects = any(n.lower() == b"expect" and v.lower() == b"100-continue"
                  for n, v in req.headers)
    return request, request_has_body(headers), expects


def _reference_size(request: ConnectRequest) -> int:
    return 64 + len(request.dest) + sum(
        16 + (len(k) + 8) // 8 * 8 + (len(v) + 8) // 8 * 8 for k, v in request.metadata)


def _reference_check(resp: ConnectResponse, upgrade_requested: bool
                     ) -> CheckedHead | type[Exception]:
    try:
        status, headers = parse_http_response(resp)
        return check_response_head(status, headers, upgrade_requested=upgrade_requested)
    except (DecodeError, BadResponseError) as exc:
        return type(exc)


# ------------------------------------------------------------------------------ strategies

_REQUEST_NAMES = [
    "Host", "Accept", "User-Agent", "X-Forwarded-For", "x-forwarded-for", "X_Forwarded_For",
    "Connection", "connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade",
    "Transfer-Encoding", "Content-Length", "Expect", "EXPECT", "Cf-Connecting-Ip",
    "cf_connecting_ip", "CF-RAY", "Cf_Visitor", "cdn-loop", "True_Client-Ip",
    "X-Forwarded-Proto", "x_forwarded_proto", "X-Custom", "Cookie", "\xe9t\xe9",
]
_REQUEST_VALUES = [
    "", "a", "100-continue", "100-Continue", "chunked", "Chunked", "gzip, chunked", "0",
    " 12 ", "7", "x", "keep-alive", "close", "X-Custom, Cookie", "x-custom,accept", "upgrade",
    "content-length", "transfer-encoding", "host", "1.2.3.4, 5.6.7.8", " , 9.9.9.9,",
]
_name = st.one_of(st.sampled_from(_REQUEST_NAMES),
                  st.text("abcXYZ-_", min_size=1, max_size=6)).map(lambda s: s.encode("latin-1"))
_value = st.one_of(st.sampled_from(_REQUEST_VALUES).map(str.encode),
                   st.binary(max_size=8).filter(lambda b: not set(b) & {0, 10, 13}))


@st.composite
def _requests(draw: st.DrawFn) -> Request:
    headers = draw(st.lists(st.tuples(_name, _value), max_size=8))
    return Request(draw(st.sampled_from(["GET", "POST", "HEAD"])), "/p?q=1", "app.example",
                   headers, "1.1", True, draw(st.booleans()), "10.0.0.1", "ray-1",
                   draw(st.sampled_from(["http", "https"])))


_RESPONSE_KEYS = ["HttpHeader:Content-Type", "HttpHeader:Content-Length",
                  "HttpHeader:content-length", "HttpHeader:Connection", "HttpHeader:Upgrade",
                  "HttpHeader:Transfer-Encoding", "HttpHeader:Keep-Alive", "HttpHeader:X-A",
                  "HttpHeader:Bad Name", "HttpHeader:", "HttpHeader:a:b", "HttpStatus", "Other"]
_RESPONSE_VALUES = ["", "12", "012", " 12", "1,1", "1, 2", "abc", "9" * 19, "x-a", "upgrade",
                    "close", "websocket", "a\r\nb", "nul\x00", "chunked", "\udce9", "\u0661\u0662"]


@st.composite
def _responses(draw: st.DrawFn) -> ConnectResponse:
    status = draw(st.sampled_from(["200", "204", "101", "100", "304", "599", "600", "099",
                                   "20", "2x0", "404"]))
    keys = _RESPONSE_KEYS if draw(st.booleans()) else _RESPONSE_KEYS[:3]  # often all clean
    entries = draw(st.lists(st.tuples(st.sampled_from(keys),
                                      st.sampled_from(_RESPONSE_VALUES)), max_size=6))
    at = draw(st.integers(0, len(entries)))
    if draw(st.booleans()):
        at = 0  # the usual place
    return ConnectResponse("", [*entries[:at], ("HttpStatus", status), *entries[at:]])


# ----------------------------------------------------------------------------------- tests


@settings(max_examples=600, deadline=None)
@given(_requests())
def test_forwarded_request_is_the_reference(req: Request) -> None:
    request, has_body, expects = forwarded_request(req)
    ref_request, ref_body, ref_expects = _reference_request(req)
    assert request == ref_request
    assert (has_body, expects) == (ref_body, ref_expects)
    assert metadata_size(request) == _reference_size(ref_request)


def _usual(*entries: tuple[str, str]) -> ConnectResponse:
    return ConnectResponse("", [("HttpStatus", "200"), ("HttpHeader:X-A", "a"), *entries])


@settings(max_examples=600, deadline=None)
@given(_responses(), st.booleans())
@example(_usual(("HttpHeader:Content-Length", "9" * 18)), False)
@example(_usual(("HttpHeader:Content-Length", "9" * 19)), False)
@example(_usual(("HttpHeader:Content-Length", "\u0661\u0662")), False)
@example(_usual(("HttpHeader:Content-Length", "2"), ("HttpHeader:content-length", "2")), False)
@example(_usual(("HttpHeader:Content-Length", "1"), ("HttpHeader:content-length", "2")), False)
@example(_usual(("HttpHeader:Content-Length", "1, 1")), False)
@example(_usual(("HttpHeader:Upgrade", "websocket")), True)
@example(_usual(("HttpHeader:X-B", "b\r\nc")), False)
@example(_usual(("HttpHeader:X B", "b")), False)
@example(_usual(("HttpHeader:", "b")), False)
@example(_usual(("HttpStatus", "404")), False)
def test_check_connect_response_is_the_reference(resp: ConnectResponse, upgrade: bool) -> None:
    expected = _reference_check(resp, upgrade)
    try:
        got: CheckedHead | type[Exception] = check_connect_response(
            resp, upgrade_requested=upgrade)
    except NbtunnelError as exc:
        got = type(exc)
    assert got == expected


def test_a_usual_head_takes_the_one_pass() -> None:
    """Status first, plain fields and one Content-Length: the fast path's own result."""
    resp = ConnectResponse("", [("HttpStatus", "200"), ("HttpHeader:Content-Type", "text/plain"),
                                ("HttpHeader:Content-Length", "012"),
                                ("HttpHeader:Date", "today")])
    head = check_connect_response(resp, upgrade_requested=False)
    assert head == CheckedHead(200, [("Content-Type", "text/plain"), ("Date", "today"),
                                     ("Content-Length", "12")], 12, False)


def test_forwarded_request_of_a_browser_like_head() -> None:
    req = Request("POST", "/up", "app.example:8080", [
        (b"Host", b"app.example:8080"), (b"Connection", b"keep-alive, X-Secret"),
        (b"X-Secret", b"s"), (b"Cf_Connecting_Ip", b"6.6.6.6"), (b"Content-Length", b"3"),
        (b"X-Forwarded-For", b"1.1.1.1"), (b"Expect", b"100-continue")],
        "1.1", True, False, "10.0.0.1", "ray-1", "https")
    request, has_body, expects = forwarded_request(req)
    assert request.dest == "https://app.example:8080/up" and request.type == ConnectionType.HTTP
    assert request.metadata == [
        ("HttpMethod", "POST"), ("HttpHost", "app.example:8080"),
        ("HttpHeader:Host", "app.example:8080"), ("HttpHeader:Content-Length", "3"),
        ("HttpHeader:Cf-Connecting-Ip", "10.0.0.1"),
        ("HttpHeader:X-Forwarded-For", "1.1.1.1, 10.0.0.1"),
        ("HttpHeader:X-Forwarded-Proto", "https"),
        ("HttpHeader:Cf-Visitor", '{"scheme":"https"}'), ("HttpHeader:Cf-Ray", "ray-1")]
    assert has_body and expects
