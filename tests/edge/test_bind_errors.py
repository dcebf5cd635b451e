"""An edge that cannot bind says which of its addresses is taken (the errno is kept, so the
embedded edge's fall back to a free public port still works)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from nbtunnel.api.edges import start_edge
from nbtunnel.edge.server import Edge, EdgeConfig


@pytest.mark.parametrize("field, what", [("http_port", "public front (--http) on tcp"),
                                         ("https_port", "HTTPS front (--https) on tcp")])
async def test_busy_port_is_named(tmp_path: Path, field: str, what: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = EdgeConfig(state_dir=tmp_path, quic_port=0, http_port=0)
        setattr(config, field, port)
        with pytest.raises(OSError) as info:
            async with Edge(config):
                pass
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value).endswith(f"Address already in use: {what} 127.0.0.1:{port}")
        if field == "http_port":  # the embedded edge moves to a free port instead
            edge = await start_edge(EdgeConfig(state_dir=tmp_path, quic_port=0, http_port=port),
                                    fallback_http=True, announce=False)
            try:
                assert edge.public_address[1] != port
            finally:
                await edge.close()


async def test_busy_connector_port_is_named(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"connector listener .--listen. on udp 127.0.0.1:{port}"):
            async with Edge(EdgeConfig(state_dir=tmp_path, quic_port=port, http_port=0)):
                pass
