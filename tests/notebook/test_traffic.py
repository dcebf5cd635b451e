"""The Python API's view of traffic: the inspector (t.requests, replay), --auth, t.get(), and
the sockets a stopped tunnel leaves behind (none)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

import nbtunnel
from nbtunnel.api.errors import TunnelError
from tests.notebook.nbhelpers import threaded_origin, wait_until


class _Echo(BaseHTTPRequestHandler):
    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "session=origin-secret")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(f"got {self.path} host={self.headers['Host']}".encode())

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(b"posted " + str(len(data)).encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    with threaded_origin(_Echo) as port:
        yield port


def test_inspector_keeps_requests_masks_secrets_and_replays(echo_port: int) -> None:
    t = nbtunnel.open_tunnel(echo_port, ha_connections=1)
    for i in range(19):
        assert t.get(f"/item/{i}?q={i}", headers={"Authorization": "Bearer abc"}).status == 200
    big = bytes(range(256)) * 40  # 10240 bytes, binary
    reply = t.get("/upload", method="POST", body=big,
                  headers={"Content-Type": "application/octet-stream", "Cookie": "a=b"})
    assert reply.text == "posted 10240"
    wait_until(lambda: len(t.requests) == 20, what="20 captured requests")
    caps = t.requests
    assert [c.target for c in caps[:2]] == ["/item/0?q=0", "/item/1?q=1"]
    first = caps[0]
    assert (first.method, first.status, first.response_body[:11]) == ("GET", 200, b"got /item/0")
    assert dict(first.request_headers)["Authorization"] == "[masked, 10 chars]"
    assert dict(first.response_headers)["Set-Cookie"].startswith("[masked")
    assert first.duration > 0 and first.time > 0
    post = caps[-1]
    assert post.request_size == 10240 and len(post.request_body) == 4096
    assert post.request_truncated and not post.replayable
    assert post.request_text().startswith("00000000  00 01 02") and "first 4096 bytes" in \
        post.request_text()
    assert dict(post.request_headers)["Cookie"].startswith("[masked")
    with pytest.raises(TunnelError, match="larger than the part kept"):
        t.replay(post.id)
    again = t.replay(first.id)
    assert again.replay_of == first.id and again.status == 200
    assert again.response_body.startswith(b"got /item/0?q=0 host=")
    assert t.requests[-1].id == again.id
    t.stop()


def test_auth_token_at_the_public_url(echo_port: int) -> None:
    t = nbtunnel.open_tunnel(echo_port, ha_connections=1, auth="token")
    token = next(n for n in t.notes if "nbtunnel_token=" in n).split("nbtunnel_token=")[1]
    token = token.split()[0]
    assert t.get("/").status == 401
    assert t.get("/", headers={"Authorization": "Bearer nope"}).status == 401
    ok = t.get("/", headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200 and ok.text.startswith("got /")
    link = t.get(f"/x?nbtunnel_token={token}")
    assert link.status == 303 and dict(link.headers)["Location"] == "/x"
    cookie = dict(link.headers)["Set-Cookie"].split(";")[0]
    assert t.get("/x", headers={"Cookie": cookie}).status == 200
    assert t.refused == 2 and t.auth_kind == "token"
    t.stop()


def test_auth_basic(echo_port: int) -> None:
    import base64

    t = nbtunnel.open_tunnel(echo_port, ha_connections=1, auth="ann:pw")
    good = "Basic " + base64.b64encode(b"ann:pw").decode()
    assert t.get("/").status == 401
    assert t.get("/", headers={"Authorization": good}).status == 200
    assert t.refused == 1
    t.stop()


def _udp_sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=int(fd))
        except OSError:
            continue
        try:
            n += s.type == socket.SOCK_DGRAM
        finally:
            s.detach()
    return n


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_stop_all_releases_udp_sockets() -> None:
    before = _udp_sockets()
    kept = []
    for i in range(4):
        t = nbtunnel.open_tunnel("http_status:204", ha_connections=2)
        t.wait_ready(2, timeout=15)
        kept.append(t)  # a user's variable keeps the Tunnel (and its runtime) alive
        if i % 2:
            t.stop()
        nbtunnel.stop_all()
        assert _udp_sockets() == before, f"round {i}"


def test_two_targets_one_connector(echo_port: int, origin_port: int) -> None:
    t = nbtunnel.open_tunnel([echo_port, origin_port], ha_connections=2)
    (h1, u1, s1), (h2, u2, s2) = t.routes
    assert (s1, s2) == (f"http://localhost:{echo_port}", f"http://localhost:{origin_port}")
    assert h1 != h2 and u1 == t.url and h2 in u2
    assert nbtunnel.find_tunnel(origin_port) is t and nbtunnel.find_tunnel(echo_port) is t
    assert t.get("/a").text.startswith("got /a")  # t.get uses the first hostname
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", t.front[1], timeout=10)
    conn.request("GET", "/b", headers={"Host": h2})
    assert conn.getresponse().read() == b"origin says /b"
    conn.close()
    assert len(t.connections) == 2  # one set of HA connections for both hostnames
    assert f"also {u2} -> {s2}" in t.summary()
    with pytest.raises(TunnelError, match="already published"):
        nbtunnel.open_tunnel([echo_port, "hello_world"])
    t.stop()
    assert nbtunnel.list_tunnels() == []
    edge = t._runtime.local_edge
    assert edge is not None and not edge.store.hostname_taken(h2)  # the extra route is gone
