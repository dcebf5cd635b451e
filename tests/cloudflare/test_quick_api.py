"""The quick-tunnel API client: request shape, honest User-Agent, typed one-line errors,
over real HTTPS with Cloudflare's API name resolved by the DNS stub."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from nbtunnel import __version__
from nbtunnel.connector.discovery import DnsOptions
from nbtunnel.connector.quick import (
    QuickTunnelError,
    QuickTunnelRateLimited,
    QuickTunnelServiceError,
    QuickTunnelTLSError,
    QuickTunnelUnreachable,
    parse_quick_answer,
    request_quick_tunnel,
)
from tests.cloudflare.cfstubs import DnsStub, TestPKI

VECTORS = Path(__file__).parents[1] / "vectors"
GOOD = (VECTORS / "quick-tunnel-response.json").read_bytes()

Handler = Callable[[web.Request], web.Response]


@pytest.fixture
async def api(pki: TestPKI, dns_stub: DnsStub) -> AsyncIterator[Callable[[Handler], object]]:
    """Start an HTTPS server (api.trycloudflare.com's certificate from the test root) whose
    /tunnel answers with the given handler; yields a starter returning (url, dns, seen)."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> tuple[str, DnsOptions, list[web.Request]]:
        seen: list[web.Request] = []

        async def tunnel(request: web.Request) -> web.Response:
            seen.append(request)
            return handler(request)

        app = web.Application()
        app.router.add_post("/tunnel", tunnel)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        host, dns_port = dns_stub.address.split(":")
        return (f"https://api.trycloudflare.com:{port}",
                DnsOptions(servers=((host, int(dns_port)),), dot=None), seen)

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


async def test_request_shape_and_honest_user_agent(api: Callable[..., object],
                                                   pki: TestPKI, dns_stub: DnsStub) -> None:
    url, dns, seen = await api(lambda r: web.Response(body=GOOD,  # type: ignore[operator]
                                                      content_type="application/json"))
    quick = await request_quick_tunnel(url, extra_cafile=str(pki.ca_path), dns=dns)
    assert quick.hostname == "fancy-words-here.trycloudflare.com"
    assert quick.url == "https://fancy-words-here.trycloudflare.com"
    assert str(quick.credentials.tunnel_id).startswith("2222")
    request = seen[0]
    assert request.method == "POST" and request.path == "/tunnel"
    assert request.headers["User-Agent"] == f"nbtunnel/{__version__}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers.get("Content-Length", "0") == "0"
    assert ("api.trycloudflare.com.", "A") in dns_stub.queries  # resolved by our resolver
    await request_quick_tunnel(url, extra_cafile=str(pki.ca_path), dns=dns,
                               user_agent="cloudflared/2026.8.2")
    assert seen[1].headers["User-Agent"] == "cloudflared/2026.8.2"


async def test_tls_failure_names_the_trusted_roots(api: Callable[..., object]) -> None:
    url, dns, seen = await api(lambda r: web.Response(body=GOOD))  # type: ignore[operator]
    with pytest.raises(QuickTunnelTLSError, match="trusted: the system trust store"):
        await request_quick_tunnel(url, dns=dns)
    assert not seen


async def test_unreachable_service_is_one_line(dns_stub: DnsStub) -> None:
    host, port = dns_stub.address.split(":")
    dns = DnsOptions(servers=((host, int(port)),), dot=None)
    with pytest.raises(QuickTunnelUnreachable, match="cannot reach the quick Tunnel service"):
        await request_quick_tunnel("https://api.trycloudflare.com:9", dns=dns, timeout=5)
    with pytest.raises(QuickTunnelUnreachable, match=r"no-such\.trycloudflare\.com"):
        await request_quick_tunnel("https://no-such.trycloudflare.com", dns=dns, timeout=5)


async def test_rate_limit_over_the_wire(api: Callable[..., object], pki: TestPKI) -> None:
    url, dns, seen = await api(lambda r: web.Response(  # type: ignore[operator]
        status=429, text="error code: 1015"))
    with pytest.raises(QuickTunnelRateLimited) as info:
        await request_quick_tunnel(url, extra_cafile=str(pki.ca_path), dns=dns)
    assert str(info.value) == ("Cloudflare is rate-limiting quick tunnels from this address "
                               "(HTTP 429, error code 1015); retry later or use a named tunnel")
    assert len(seen) == 1  # no retry loop


@pytest.mark.parametrize(("status", "body", "kind", "message"), [
    (429, b"error code: 1015", QuickTunnelRateLimited, "rate-limiting quick tunnels"),
    (500, b"error code: 1101", QuickTunnelServiceError,
     "the quick Tunnel service failed (HTTP 500: error code: 1101); retry in a minute"),
    (502, b"<html>bad gateway</html>", QuickTunnelServiceError, "HTTP 502"),
    (200, json.dumps({"success": True, "result": {"id": ""}, "errors": []}).encode(),
     QuickTunnelServiceError, "without a tunnel (no tunnel id)"),
    (400, json.dumps({"success": False, "result": None,
                      "errors": [{"code": 1003, "message": "bad request"}]}).encode(),
     QuickTunnelError, "HTTP 400 without a tunnel (1003: bad request)"),
    (200, b"not json", QuickTunnelError, "a body that is not a quick Tunnel"),
])
def test_error_answers(status: int, body: bytes, kind: type[Exception], message: str) -> None:
    with pytest.raises(kind) as info:
        parse_quick_answer(status, body)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_hostname_with_or_without_scheme() -> None:
    doc = json.loads(GOOD)
    assert parse_quick_answer(200, GOOD).url == "https://fancy-words-here.trycloudflare.com"
    doc["result"]["hostname"] = "https://fancy-words-here.trycloudflare.com"
    again = parse_quick_answer(200, json.dumps(doc).encode())
    assert again.url == "https://fancy-words-here.trycloudflare.com"
    upper = {k.upper(): v for k, v in json.loads(GOOD).items()}  # keys are case-insensitive
    assert parse_quick_answer(200, json.dumps(upper).encode()).hostname
