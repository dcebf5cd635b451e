"""The mitmproxy addon and contentview decode tunnel streams (mitmproxy 11 and 12 APIs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mitmproxy")

from mitmproxy import contentviews, tcp
from mitmproxy.test import taddons, tflow
from nbtunnel_lab.mitm_addon import TunnelDecodeAddon, register_contentview
from nbtunnel_lab.records import RecordStore

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def _flow(stream_id: int, c2e: bytes, e2c: bytes) -> Any:
    flow = tflow.ttcpflow()
    flow.metadata["quic_stream_id_client"] = stream_id
    half = len(c2e) // 2  # split a message across two TCP messages on purpose
    flow.messages = [tcp.TCPMessage(True, c2e[:half]), tcp.TCPMessage(True, c2e[half:]),
                     tcp.TCPMessage(False, e2c)]
    return flow


def _render(flow: Any, message: Any) -> str:
    if hasattr(contentviews, "prettify_message"):  # mitmproxy 12
        return str(contentviews.prettify_message(message, flow).text)
    _, lines, _ = contentviews.get_message_content_view("auto", message, flow)
    return "\n".join("".join(text for _, text in line) for line in lines)


def test_addon_labels_and_decodes_the_control_stream() -> None:
    store = RecordStore()
    addon = TunnelDecodeAddon(store)
    flow = tflow.ttcpflow()
    flow.metadata["quic_stream_id_client"] = 0
    flow.messages = []
    with taddons.context(addon):
        for from_client, name in ((True, "quic-control-c2e.bin"), (False, "quic-control-e2c.bin")):
            flow.messages.append(tcp.TCPMessage(from_client, (VECTORS / name).read_bytes()))
            addon.tcp_message(flow)
    assert flow.metadata["nbtunnel_plane"] == "control"
    assert any(line.startswith("call: registerConnection") for line in flow.metadata["nbtunnel"])
    assert any("connectionDetails" in r.summary for r in store.snapshot())


def test_contentview_renders_data_stream_messages() -> None:
    flow = _flow(4, (VECTORS / "quic-data-get-c2e.bin").read_bytes(),
                 (VECTORS / "quic-data-get-e2c.bin").read_bytes())
    with taddons.context():
        view = register_contentview()
        try:
            request = _render(flow, flow.messages[2])
            response = _render(flow, flow.messages[0]) + _render(flow, flow.messages[1])
        finally:
            if view is not None:
                contentviews.remove(view)
    assert "ConnectRequest http GET http://probe.example/hello" in request
    assert "ConnectResponse 200" in response and "body" in response
