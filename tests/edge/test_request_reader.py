"""The front's request reader against h11, on a corpus and on generated pipelines, plus a
fuzz target: any bytes, split anywhere, give well-formed events or a refusal, never an
exception (long run: `pytest -m fuzz tests.edge.test_request_reader.py`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtunnel.edge.request_reader import Body, End, Refusal, Request, RequestReader
from tests.edge.front_corpus import ABSOLUTE_FORM, CORPUS, STRICTER_THAN_H11

HOST = "t.localhost"
FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=int(os.environ.get("NBTUNNEL_FUZZ_EXAMPLES", "5000")),
                deadline=None, suppress_health_check=list(HealthCheck))


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def with_h11(data: bytes) -> tuple[list[Seen], bool]:
    """Complete requests h11 parses, answering each so it moves on; (requests, rejected)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    out: list[Seen] = []
    head: h11.Request | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(
                    event, h11.ConnectionClosed):
                return out, False
            if isinstance(event, h11.Request):
                head, body = event, b""
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                out.append(Seen(head.method.decode(), head.target.decode(),
                                tuple((bytes(n), bytes(v)) for n, v in head.headers), body))
                conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return out, False  # not reusable: the front closes here too
                conn.start_next_cycle()
    except h11.RemoteProtocolError:
        return out, True


def with_reader(chunks: list[bytes]) -> tuple[list[Seen], bool]:
    reader = RequestReader()
    out: list[Seen] = []
    head: Request | None = None
    body = b""
    for chunk in chunks:
        for event in reader.feed(chunk):
            if isinstance(event, Request):
                head, body = event, b""
            elif isinstance(event, Body):
                body += event.data
            elif isinstance(event, End):
                assert head is not None
                out.append(Seen(head.method, head.target, tuple(
                    (n.lower(), v) for n, v in head.headers), body))
                if not head.keep_alive:
                    return out, False
            else:
                assert isinstance(event, Refusal)
                return out, True
    return out, False


def _bytes(template: str) -> bytes:
    return template.replace("{h}", HOST).encode("latin-1")


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_matches_h11(name: str) -> None:
    data = _bytes(CORPUS[name])
    expected = with_h11(data)
    assert with_reader([data]) == expected
    assert with_reader([bytes([b]) for b in data]) == expected  # one byte at a time


@pytest.mark.parametrize("name", list(STRICTER_THAN_H11))
def test_documented_stricter_cases(name: str) -> None:
    data = _bytes(STRICTER_THAN_H11[name])
    accepted, rejected = with_h11(data)
    assert accepted and not rejected  # h11 takes it...
    assert with_reader([data]) == ([], True)  # ...the front refuses it


def test_absolute_form_is_rewritten_to_origin_form_with_its_authority() -> None:
    (seen,), rejected = with_reader([_bytes(ABSOLUTE_FORM)])
    assert not rejected
    assert seen.target == "/echo/abs?q=1"
    assert [v for n, v in seen.headers if n == b"host"] == [HOST.encode()]


_token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'",
                 min_size=1, max_size=12)
_value = st.text("".join(chr(c) for c in range(0x21, 0x7F)), max_size=20)
_body = st.binary(max_size=300)


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
    target = "/echo/" + draw(_token)
    names = draw(st.lists(_token.filter(lambda t: t.lower() not in {
        "host", "content-length", "transfer-encoding", "connection", "upgrade", "expect",
        "te", "trailer", "keep-alive"}), max_size=6))
    fields = [f"{n}: {draw(_value)}" for n in names]
    body = draw(_body)
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "none" or (not body and framing == "length"):
        body = b""
    payload = body
    if framing == "chunked":
        fields.append("Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
    elif body:
        fields.append(f"Content-Length: {len(body)}")
    head = f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n" + "".join(
        f"{f}\r\n" for f in fields) + "\r\n"
    return head.encode() + payload


def _pipelines_match(requests: list[bytes], cuts: list[int]) -> None:
    data = b"".join(requests)
    expected = with_h11(data)
    assert not expected[1]
    assert len(expected[0]) == len(requests)
    assert with_reader(_splits(data, cuts)) == expected


def _never_raises(data: bytes, cuts: list[int]) -> None:
    reader = RequestReader(max_head_bytes=4096, max_fields=32)
    in_message = refused = False
    body = 0
    for chunk in _splits(data, cuts):
        for event in reader.feed(chunk):
            assert not refused  # nothing after a refusal
            if isinstance(event, Request):
                assert not in_message
                in_message = True
            elif isinstance(event, Body):
                assert in_message
                body += len(event.data)
            elif isinstance(event, End):
                assert in_message
                in_message = False
            else:
                assert isinstance(event, Refusal) and event.status in (400, 405, 431)
                refused = True
    assert body <= len(data)


_pipeline = (st.lists(_request(), min_size=1, max_size=3), st.lists(st.integers(0, 4000),
                                                                     max_size=6))
_noise = st.one_of(st.binary(max_size=600), st.lists(_request(), min_size=1, max_size=2).map(
    lambda rs: b"".join(rs)).flatmap(lambda b: st.tuples(st.just(b), st.integers(0, len(b)),
                                                         st.binary(max_size=8)).map(
    lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:])))

test_generated_pipelines_match_h11 = FAST(given(*_pipeline)(_pipelines_match))
test_generated_pipelines_match_h11_long = pytest.mark.fuzz(LONG(given(*_pipeline)(
    _pipelines_match)))
test_any_bytes_never_raise = FAST(given(_noise, st.lists(st.integers(0, 700), max_size=6))(
    _never_raises))
test_any_bytes_never_raise_long = pytest.mark.fuzz(LONG(given(
    _noise, st.lists(st.integers(0, 700), max_size=6))(_never_raises)))
