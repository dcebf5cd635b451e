"""OriginClient against real origins on 127.0.0.1: aiohttp apps and raw asyncio servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from wsproto.frame_protocol import FrameProtocol, Opcode

from nbtunnel.connector.hello import HelloWorldServer
from nbtunnel.connector.origin import (
    ORIGIN_UNREACHABLE,
    OriginClient,
    OriginError,
    OriginResponse,
    OriginUpgrade,
    http_status_response,
)
from nbtunnel.core.httpmeta import HttpRequestHead

TAG = "91312e4a-7cbf-43ff-a315-bfacad75f543"
VECTORS = Path(__file__).parent.parent / "vectors"
BIG = 20 * 1024 * 1024
BLOCK = hashlib.sha256(b"nbtunnel").digest() * 2048  # 64 KiB of deterministic bytes

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def head(method: str = "GET", dest: str = "/", headers: list[tuple[str, str]] | None = None,
         host: str = "probe.example", websocket: bool = False) -> HttpRequestHead:
    return HttpRequestHead(method=method, host=host, dest=dest, headers=headers or [],
                           websocket=websocket)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def big_body() -> AsyncIterator[bytes]:
    for _ in range(BIG // len(BLOCK)):
        yield BLOCK


async def read_all(resp: OriginResponse) -> bytes:
    try:
        return b"".join([c async for c in resp.body])
    finally:
        await resp.aclose()


@pytest.fixture
async def client() -> AsyncIterator[OriginClient]:
    c = OriginClient(connector_id=TAG, connect_timeout=5.0)
    yield c
    await c.aclose()


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An aiohttp origin; the event releases the second SSE event."""
    release = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        info = {"method": request.method, "path": request.raw_path, "body": body.decode(),
                "headers": [[k.decode(), v.decode()] for k, v in request.raw_headers],
                "port": request.transport.get_extra_info("peername")[1]}  # type: ignore[union-attr]
        return web.json_response(info, headers={"X-Seen-Method": request.method})

    async def upload(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"sha256": digest.hexdigest(), "size": size,
                                  "te": request.headers.get("Transfer-Encoding", "")})

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = BIG
        await resp.prepare(request)
        for _ in range(BIG // len(BLOCK)):
            await resp.write(BLOCK)
        return resp

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await release.wait()
        await resp.write(b"data: second\n\n")
        return resp

    async def misc(request: web.Request) -> web.Response:
        headers = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Location", "/elsewhere"),
                   ("Content-Encoding", "gzip")]
        return web.Response(status=302, body=b"\x1f\x8b raw", headers=headers)

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    app.router.add_get("/sse", sse)
    app.router.add_get("/misc", misc)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", release
    release.set()
    await runner.cleanup()


async def raw_origin(handler: RawHandler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def echo_json(client: OriginClient, service: str, h: HttpRequestHead,
                    body: AsyncIterator[bytes] | None = None) -> dict[str, object]:
    resp = await client.request(service, h, body)
    assert resp.status == 200
    result: dict[str, object] = json.loads(await read_all(resp))
    return result


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE"])
async def test_methods_headers_and_query(
    client: OriginClient, origin: tuple[str, asyncio.Event], method: str
) -> None:
    service, _ = origin
    eyeball = [("User-Agent", "t/1"), ("X-Multi", "a"), ("X-Multi", "b")]
    body = None
    if method in ("POST", "PUT"):
        eyeball.append(("Content-Length", "11"))
        body = chunks(b"hello", b"=world")
    resp = await client.request(service, head(method, "https://probe.example/echo?x=1&y=two",
                                              eyeball), body)
    data = await read_all(resp)
    assert resp.status == 200
    assert ("X-Seen-Method", method) in resp.headers
    if method == "HEAD":
        assert data == b""
        return
    info = json.loads(data)
    assert info["method"] == method and info["path"] == "/echo?x=1&y=two"
    assert info["body"] == ("hello=world" if body else "")
    seen = [tuple(h) for h in info["headers"]]
    assert seen[:4] == [("Host", "probe.example"), *eyeball[:3]]
    assert ("Cf-Warp-Tag-Id", TAG) in seen and ("Connection", "keep-alive") in seen
    names = {k.lower() for k, _ in seen}
    assert not names & {"accept", "accept-encoding", "content-type"}  # nothing invented


async def test_request_head_matches_cloudflared_capture(client: OriginClient) -> None:
    """Same headers cloudflared sent in the capture, minus Go's own Accept-Encoding."""
    captured = json.loads((VECTORS / "quic-origin-received.json").read_text())
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readuntil(b"\r\n\r\n"))
        if b"Content-Length: 11" in got[-1]:
            got.append(await reader.readexactly(11))
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        writer.close()

    server, service = await raw_origin(handle)
    async with server:
        for want in captured["http_origin_requests"]:
            expected = [(k, v) for k, v in want["headers"] if k != "Accept-Encoding"]
            eyeball = [h for h in expected
                       if h[0] not in ("Host", "Cf-Warp-Tag-Id", "Connection")]
            body = chunks(want["body"].encode()) if want["body"] else None
            resp = await client.request(service, head(want["method"], want["path"], eyeball),
                                        body)
            await read_all(resp)
            lines = got[0].decode().split("\r\n")
            assert lines[0] == f"{want['method']} {want['path']} HTTP/1.1"
            tag = dict(expected)["Cf-Warp-Tag-Id"]  # the capture's random connector id
            sent = [(k, tag if k == "Cf-Warp-Tag-Id" else v)
                    for k, v in (line.split(": ", 1) for line in lines[1:] if line)]
            assert sorted(sent) == sorted(expected)
            assert b"".join(got[1:]) == want["body"].encode()
            got.clear()


async def test_host_header_override_and_hop_by_hop(
    client: OriginClient, origin: tuple[str, asyncio.Event]
) -> None:
    service, _ = origin
    eyeball = [("Connection", "X-Private"), ("X-Private", "1"), ("Keep-Alive", "timeout=5"),
               ("Te", "trailers"), ("Upgrade", "h2c"), ("Cf-Warp-Tag-Id", "spoofed"),
               ("X-Kept", "yes")]
    resp = await client.request(service, head("GET", "/echo", eyeball), None,
                                http_host_header="internal.local")
    seen = [tuple(h) for h in json.loads(await read_all(resp))["headers"]]
    assert seen == [("Host", "internal.local"), ("X-Kept", "yes"),
                    ("X-Forwarded-Host", "probe.example"), ("Cf-Warp-Tag-Id", TAG),
                    ("Connection", "keep-alive")]


async def test_response_passed_through_untouched(
    client: OriginClient, origin: tuple[str, asyncio.Event]
) -> None:
    """No redirect following, no decompression, repeated headers kept in order, no cookies."""
    service, _ = origin
    resp = await client.request(service, head("GET", "/misc"), None)
    assert resp.status == 302
    assert [v for k, v in resp.headers if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert await read_all(resp) == b"\x1f\x8b raw"
    info = await echo_json(client, service, head("GET", "/echo"))
    assert "cookie" not in {k.lower() for k, _ in info["headers"]}  # type: ignore[attr-defined]


async def test_keep_alive_reuses_the_connection(
    client: OriginClient, origin: tuple[str, asyncio.Event]
) -> None:
    service, _ = origin
    first = await echo_json(client, service, head("GET", "/echo"))
    second = await echo_json(client, service, head("GET", "/echo"))
    assert first["port"] == second["port"]


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_streamed_upload(
    client: OriginClient, origin: tuple[str, asyncio.Event], length: bool
) -> None:
    service, _ = origin
    headers = [("Content-Length", str(BIG))] if length else [("Transfer-Encoding", "chunked")]
    info = await echo_json(client, service, head("POST", "/upload", headers), big_body())
    expected = hashlib.sha256()
    async for block in big_body():
        expected.update(block)
    assert info == {"sha256": expected.hexdigest(), "size": BIG,
                    "te": "" if length else "chunked"}


async def test_streamed_download(client: OriginClient, origin: tuple[str, asyncio.Event]) -> None:
    service, _ = origin
    resp = await client.request(service, head("GET", "/download"), None)
    assert ("Content-Length", str(BIG)) in resp.headers
    digest, size, count = hashlib.sha256(), 0, 0
    async for chunk in resp.body:
        digest.update(chunk)
        size, count = size + len(chunk), count + 1
    await resp.aclose()
    expected = hashlib.sha256(BLOCK * (BIG // len(BLOCK))).hexdigest()
    assert (digest.hexdigest(), size) == (expected, BIG)
    assert count > 10  # arrived as a stream, not as one buffer


async def test_sse_event_arrives_before_the_origin_finishes(
    client: OriginClient, origin: tuple[str, asyncio.Event]
) -> None:
    service, release = origin
    resp = await client.request(service, head("GET", "/sse"), None)
    assert ("Content-Type", "text/event-stream") in resp.headers
    assert not any(k == "Transfer-Encoding" for k, _ in resp.headers)
    async with asyncio.timeout(5):
        assert await anext(resp.body) == b"data: first\n\n"  # origin is blocked on `release`
        release.set()
        assert await read_all(resp) == b"data: second\n\n"


async def test_connection_refused(client: OriginClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cause = f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    for call in (lambda: client.request(f"http://127.0.0.1:{port}", head(), None),
                 lambda: client.websocket(f"http://127.0.0.1:{port}", head(websocket=True))):
        with pytest.raises(OriginError) as info:
            await call()
        assert info.value.cause == cause
        assert str(info.value) == f"{ORIGIN_UNREACHABLE}: {cause}"


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A listener with a full accept queue drops SYNs, so a dial hangs until its timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for s in fillers:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        try:
            yield port
        finally:
            for s in fillers:
                s.close()


async def test_connect_timeout(hanging_port: int) -> None:
    client = OriginClient(connector_id=TAG, connect_timeout=0.2)
    try:
        with pytest.raises(OriginError) as info:
            await client.request(f"http://127.0.0.1:{hanging_port}", head(), None)
        assert info.value.cause == f"dial tcp 127.0.0.1:{hanging_port}: i/o timeout"
    finally:
        await client.aclose()


async def test_origin_closes_without_answering(client: OriginClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server, service = await raw_origin(handle)
    async with server:
        with pytest.raises(OriginError) as info:
            await client.request(service, head("POST"), None)
        assert info.value.cause == "EOF"


async def test_unix_socket_origin(client: OriginClient, tmp_path: Path) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.host} {request.path_qs}")

    app = web.Application()
    app.router.add_get("/p", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    path = str(tmp_path / "origin.sock")
    await web.UnixSite(runner, path).start()
    try:
        resp = await client.request(f"unix:{path}", head("GET", "/p?q=1"), None)
        assert await read_all(resp) == b"probe.example /p?q=1"
    finally:
        await runner.cleanup()


async def test_unix_tls_socket_origin(client: OriginClient, tmp_path: Path) -> None:
    """`unix+tls:/path`: HTTPS over a Unix socket (verified unless noTLSVerify, as https://)."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"tls={request.secure} {request.path_qs}")

    app = web.Application()
    app.router.add_get("/p", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    path = str(tmp_path / "origin-tls.sock")
    await web.UnixSite(runner, path, ssl_context=self_signed(tmp_path)).start()
    try:
        with pytest.raises(OriginError, match="certificate"):
            await client.request(f"unix+tls:{path}", head("GET", "/p"), None)
        resp = await client.request(f"unix+tls:{path}", head("GET", "/p?q=1"), None,
                                    no_tls_verify=True)
        assert await read_all(resp) == b"tls=True /p?q=1"
    finally:
        await runner.cleanup()


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


async def test_https_origin_verifies_unless_told_not_to(
    client: OriginClient, tmp_path: Path
) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed(tmp_path)).start()
    service = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        with pytest.raises(OriginError) as info:
            await client.request(service, head(), None)
        assert info.value.cause.startswith("tls: failed to verify certificate")
        resp = await client.request(service, head(), None, no_tls_verify=True)
        assert await read_all(resp) == b"secure"
    finally:
        await runner.cleanup()


async def test_websocket_upgrade_to_hello_world_echo(client: OriginClient) -> None:
    hello = HelloWorldServer()
    await hello.start()
    key = base64.b64encode(b"0123456789abcdef").decode()
    try:
        result = await client.websocket(hello.url, head("GET", "/ws", [
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13"),
            ("Cf-Cloudflared-Proxy-Connection-Upgrade", "websocket")], websocket=True))
        assert isinstance(result, OriginUpgrade) and result.status == 101
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        assert ("Sec-WebSocket-Accept", accept) in result.headers
        frames = FrameProtocol(client=True, extensions=[])
        result.writer.write(frames.send_data("ping over the tunnel", fin=True))
        result.writer.write(frames.send_data(b"\x00\xffbin", fin=True))
        got: list[tuple[Opcode, object]] = []
        async with asyncio.timeout(5):
            while len(got) < 2:
                frames.receive_bytes(await result.reader.read(65536))
                got += [(f.opcode, f.payload) for f in frames.received_frames()]
        assert got == [(Opcode.TEXT, "ping over the tunnel"), (Opcode.BINARY, b"\x00\xffbin")]
        result.writer.close()
        await result.writer.wait_closed()
    finally:
        await hello.stop()


async def test_websocket_bytes_after_the_101_come_first(client: OriginClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n\x81\x05early")  # one write: head + a frame
        writer.write_eof()
        await reader.read()  # until the connector closes its side
        writer.close()

    server, service = await raw_origin(handle)
    async with server:
        result = await client.websocket(service, head("GET", "/ws", websocket=True))
        assert isinstance(result, OriginUpgrade)
        assert result.headers == [("Upgrade", "websocket"), ("Connection", "Upgrade")]
        assert await result.reader.read() == b"\x81\x05early"
        result.writer.close()


async def test_websocket_refused_by_origin(
    client: OriginClient, origin: tuple[str, asyncio.Event]
) -> None:
    """A non-101 answer comes back as a response; it also shows the upgrade request sent."""
    service, _ = origin
    eyeball = [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
               ("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Version", "8")]
    result = await client.websocket(service, head("GET", "/echo?ws=1", eyeball, websocket=True))
    assert isinstance(result, OriginResponse) and result.status == 200
    info = json.loads(await read_all(result))
    assert info["path"] == "/echo?ws=1"
    assert [tuple(h) for h in info["headers"]] == [
        ("Host", "probe.example"), *eyeball[:2], ("Cf-Warp-Tag-Id", TAG),
        ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]


async def test_http_status_response() -> None:
    resp = await http_status_response(404)
    assert (resp.status, resp.headers) == (404, [])
    assert await read_all(resp) == b""


async def test_disable_chunked_encoding_sends_a_content_length(
    client: OriginClient, origin: tuple[str, asyncio.Event]
) -> None:
    """originRequest.disableChunkedEncoding: a chunked eyeball body reaches the origin with a
    Content-Length instead (for WSGI servers)."""
    service, _ = origin
    h = head("POST", "/upload", [("Transfer-Encoding", "chunked")])
    resp = await client.request(service, h, chunks(b"abc", b"def"), disable_chunked=True)
    info = json.loads(await read_all(resp))
    assert info == {"sha256": hashlib.sha256(b"abcdef").hexdigest(), "size": 6, "te": ""}


async def test_per_request_connect_timeout(hanging_port: int) -> None:
    """originRequest.connectTimeout applies per request, over the client's default."""
    client = OriginClient(connector_id=TAG, connect_timeout=30.0)
    try:
        with pytest.raises(OriginError, match="i/o timeout"):
            await client.request(f"http://127.0.0.1:{hanging_port}", head(), None,
                                 connect_timeout=0.2)
    finally:
        await client.aclose()


async def test_head_then_get_on_one_kept_alive_connection(
    client: OriginClient, origin: tuple[str, asyncio.Event]
) -> None:
    """A HEAD answer announces a length but has no body: the next response on the same
    connection must still parse."""
    service, _ = origin
    resp = await client.request(service, head("HEAD", "/echo"), None)
    assert (resp.status, await read_all(resp)) == (200, b"")
    first = await echo_json(client, service, head("GET", "/echo"))
    second = await echo_json(client, service, head("GET", "/echo"))
    assert first["method"] == "GET" and first["port"] == second["port"]


async def test_raw_origin_answers(client: OriginClient) -> None:
    """Early hints before the answer, a body ended by the connection's close, and a pooled
    connection the origin dropped while idle (not reused)."""
    answers = [
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept",
    ]
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                seen.append(await reader.readuntil(b"\r\n\r\n"))
            except asyncio.IncompleteReadError:
                break
            answer = answers.pop(0)
            writer.write(answer)
            if b"until close" in answer or b"kept" in answer:
                break  # close: the client's pooled connection is now stale
        writer.close()

    server, service = await raw_origin(handle)
    async with server:
        resp = await client.request(service, head("GET", "/hints"), None)
        assert resp.status == 200 and ("Link", "</a.css>") not in resp.headers
        assert await read_all(resp) == b"ok"
        resp = await client.request(service, head("GET", "/close"), None)  # same connection
        assert await read_all(resp) == b"until close"
        resp = await client.request(service, head("GET", "/kept"), None)  # new connection
        assert await read_all(resp) == b"kept"
        with pytest.raises(OriginError):  # the pooled one is closed, a fresh one gets no answer
            await client.request(service, head("GET", "/stale"), None)
    assert [s.split(b" ")[1] for s in seen] == [b"/hints", b"/close", b"/kept"]


async def test_header_injection_is_refused(
    client: OriginClient, origin: tuple[str, asyncio.Event]
) -> None:
    service, _ = origin
    with pytest.raises(OriginError, match="invalid request"):
        await client.request(service, head("GET", "/echo", [("X-A", "1\r\nX-B: 2")]), None)


async def test_reused_connection_closed_instead_of_answering_is_retried_for_a_get(
    client: OriginClient,
) -> None:
    """The origin closes a kept-alive connection just as the next request arrives: a GET is
    sent again on a new connection (as Go's transport does), a POST is not."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")  # the next request: dropped unanswered
        writer.close()

    server, service = await raw_origin(handle)
    async with server:
        assert await read_all(await client.request(service, head("GET", "/a"), None)) == b"ok"
        assert await read_all(await client.request(service, head("GET", "/b"), None)) == b"ok"
        assert connections == 2
        with pytest.raises(OriginError, match="EOF"):
            await client.request(service, head("POST", "/c", [("Content-Length", "1")]),
                                 chunks(b"x"))


@pytest.mark.parametrize(("declared", "parts", "error"), [
    (5, (b"hello", b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
     "ran past its Content-Length of 5 bytes"),
    (10, (b"hello",), "ended after 5 of its Content-Length of 10 bytes"),
], ids=["longer", "shorter"])
async def test_a_body_that_breaks_its_content_length_fails_its_request(
    client: OriginClient, declared: int, parts: tuple[bytes, ...], error: str,
) -> None:
    """Bytes past a request's Content-Length would be the origin's next request on a kept-alive
    connection (a smuggled one): they are never sent, and a body that ends short does not
    leave the origin waiting. Either way the request fails and its connection is closed."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())  # everything until the connector closes
        writer.close()

    server, service = await raw_origin(handle)
    async with server:
        with pytest.raises(OriginError, match=error):
            await client.request(service, head("POST", "/up", [("Content-Length", str(declared))]),
                                 chunks(*parts))
        seen = await asyncio.wait_for(received, 5)
    assert seen.endswith(b"\r\n\r\nhello")
    assert b"smuggled" not in seen


async def test_one_connection_carries_responses_of_every_framing_in_turn(
    client: OriginClient,
) -> None:
    """A kept-alive connection reuses its response parser after a complete response: a
    Content-Length body, a chunked one, a HEAD (head only), a 204 and one with a second
    response behind it (ignored: not part of the body, and that connection is not trusted
    again) all read back correctly."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",  # to a HEAD
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nX",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter",
    ]
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while answers:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            writer.write(answers.pop(0))
        writer.close()

    server, service = await raw_origin(handle)
    async with server:
        got = []
        for method in ("GET", "GET", "HEAD", "GET", "GET", "GET"):
            resp = await client.request(service, head(method), None)
            got.append((resp.status, await read_all(resp)))
    assert got == [(200, b"first"), (200, b"second"), (200, b""), (204, b""), (200, b"last"),
                   (200, b"after")]
    assert len(connections) == 2  # the one after the stray response is a new connection
