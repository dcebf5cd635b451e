"""The real cloudflared and our edge's loopback datagram size (``loopback_datagram_size``).

cloudflared dials our edge on 127.0.0.1, a loopback address, so the edge extends its path MTU
probing towards it; quic-go announces a max_udp_payload_size of 1452, which must cap every
probe and packet the edge sends it (a bigger datagram would be dropped by quic-go's 1452-byte
read buffer). Skipped unless NBTUNNEL_CLOUDFLARED names the binary.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.transport.quic import available_backends
from nbtunnel.transport.quic.backend import LOOPBACK_DATAGRAM_ENV
from tests.e2e.conftest import Origin, download_sha256
from tests.interop.test_cloudflared import quick_cloudflared

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not os.environ.get("NBTUNNEL_CLOUDFLARED"),
                       reason="set NBTUNNEL_CLOUDFLARED to a cloudflared binary"),
    pytest.mark.skipif("qh3" not in available_backends(), reason="qh3 not installed"),
]


async def test_cloudflared_caps_the_edges_loopback_datagrams_at_1452(
    origin: Origin, client: aiohttp.ClientSession, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LOOPBACK_DATAGRAM_ENV, "16384")
    config = EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0)
    sent: list[int] = []
    async with Edge(config) as edge, quick_cloudflared(edge, origin.url, tmp_path) as cf:
        (conn,) = edge.registry.connections()
        quic_conn = conn.transport
        endpoint = edge._quic._server._transport  # type: ignore[union-attr]  # UdpEndpoint
        real_sendto, real_segments = endpoint.sendto, endpoint._send_segments

        def sendto(data: bytes, addr: object = None) -> None:
            sent.append(len(data))
            real_sendto(data, addr)

        def send_segments(run: list[bytes], size: int, addr: object) -> bool:
            ok: bool = real_segments(run, size, addr)
            if ok:  # (else each goes through sendto)
                sent.extend(len(d) for d in run)
            return ok

        endpoint.sendto, endpoint._send_segments = sendto, send_segments
        hp = edge.public_address
        size = 8 << 20
        async with client.get(f"http://{hp[0]}:{hp[1]}/download/{size}",
                              headers={"Host": cf.hostname}) as resp:
            assert resp.status == 200
            digest = hashlib.sha256()
            async for chunk in resp.content.iter_any():
                digest.update(chunk)
        assert digest.hexdigest() == download_sha256(size)
        body = os.urandom(4 << 20)
        async with client.post(f"http://{hp[0]}:{hp[1]}/upload", data=body,
                               headers={"Host": cf.hostname}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["sha256"] == hashlib.sha256(body).hexdigest()
        quic = quic_conn._quic
        assert quic._max_datagram_size == 1452  # probed up to quic-go's limit, not past it
        assert not [s for s in quic._mtu_probe_sizes if s > 1452]
    assert sent and max(sent) <= 1452, max(sent)
