"""A mitmproxy addon and contentview that decode tunnel streams with the core's decoder.

For mitmproxy's own QUIC mode (``--mode reverse:quic://EDGE`` with ALPN ``argotunnel``) each
QUIC stream surfaces as a TCP flow with ``flow.metadata["quic_stream_id_client"]``. The addon
labels each flow control or data plane and stores the decoded records in
``flow.metadata["nbtunnel"]``; the contentview shows them in mitmproxy's UI.

Both contentview APIs are handled: mitmproxy 12's ``Contentview`` protocol (``prettify``) and
mitmproxy 11's ``View`` class (``__call__`` returning lines); ``register_contentview`` picks.
Use it standalone: ``mitmdump -s lab/nbtunnel_lab/mitm_addon.py --mode reverse:quic://...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nbtunnel.core.decode import DecodedMessage, Direction, StreamDecoder, decode_stream
from nbtunnel.core.streams import DATA_SIGNATURE, RPC_SIGNATURE
from nbtunnel_lab.records import Record, RecordStore

NAME = "nbtunnel"


def _stream_id(flow: Any) -> int | None:
    sid = getattr(flow, "metadata", {}).get("quic_stream_id_client")
    return sid if isinstance(sid, int) else None


def decode_message(flow: Any, message: Any) -> list[DecodedMessage]:
    """The records overlapping ``message``: its direction is decoded from the stream start."""
    direction: Direction = "c2e" if message.from_client else "e2c"
    start = 0
    data = b""
    for m in flow.messages:
        if m.from_client != message.from_client:
            continue
        if m is message:
            start = len(data)
        data += m.content
        if m is message:
            break
    end = start + len(message.content)
    return [r for r in decode_stream(data, direction)
            if r.offset < end and r.offset + max(r.length, 1) > start]


def describe(records: list[DecodedMessage]) -> str:
    return "\n".join(f"[{r.plane}] {r.kind}: {r.summary}" for r in records) or "(nothing decoded)"


def looks_like_tunnel(data: bytes, flow: Any) -> bool:
    return _stream_id(flow) is not None or data.startswith((DATA_SIGNATURE, RPC_SIGNATURE))


class NbtunnelContentview:
    """mitmproxy 12 ``Contentview``: ``prettify(data, metadata) -> str``."""

    name = NAME
    syntax_highlight = "none"

    def prettify(self, data: bytes, metadata: Any) -> str:
        flow, message = metadata.flow, metadata.tcp_message
        if flow is not None and message is not None:
            return describe(decode_message(flow, message))
        return describe(decode_stream(data, "e2c" if data.startswith(DATA_SIGNATURE) else "c2e"))

    def render_priority(self, data: bytes, metadata: Any) -> float:
        if metadata.tcp_message is not None and looks_like_tunnel(data, metadata.flow):
            return 2.0
        return -1.0


def _legacy_view_class() -> type:
    from mitmproxy.contentviews import base

    class NbtunnelView(base.View):
        """mitmproxy 11 ``View``: ``__call__`` returns (description, lines)."""

        name = NAME

        def __call__(self, data: bytes, **meta: Any) -> tuple[str, Iterator[Any]]:
            flow, message = meta.get("flow"), meta.get("tcp_message")
            if flow is not None and message is not None:
                text = describe(decode_message(flow, message))
            else:
                text = NbtunnelContentview().prettify(data, _NoMeta())
            return "nbtunnel", iter([[("text", line)] for line in text.splitlines()])

        def render_priority(self, data: bytes, **meta: Any) -> float:
            if meta.get("tcp_message") is not None and looks_like_tunnel(data, meta.get("flow")):
                return 2.0
            return 0.0

    return NbtunnelView


class _NoMeta:
    flow = None
    tcp_message = None


def register_contentview() -> Any:
    """Register for whichever mitmproxy is installed; returns what to pass to ``remove``."""
    from mitmproxy import contentviews

    view: Any = NbtunnelContentview() if hasattr(contentviews, "Contentview") \
        else _legacy_view_class()()
    try:
        contentviews.add(view)
    except ValueError:  # already registered (an addon loaded twice): keep the first
        return None
    return view


class TunnelDecodeAddon:
    """Labels every QUIC-stream flow and decodes each message as it passes."""

    def __init__(self, store: RecordStore | None = None) -> None:
        self.store = store
        self._decoders: dict[tuple[str, bool], StreamDecoder] = {}
        self._view: Any = None

    def load(self, loader: Any) -> None:
        self._view = register_contentview()

    def done(self) -> None:
        if self._view is not None:
            from mitmproxy import contentviews

            contentviews.remove(self._view)
            self._view = None

    def tcp_message(self, flow: Any) -> None:
        message = flow.messages[-1]
        key = (flow.id, message.from_client)
        decoder = self._decoders.setdefault(
            key, StreamDecoder("c2e" if message.from_client else "e2c"))
        records = decoder.feed(message.content)
        sid = _stream_id(flow)
        plane = flow.metadata.get("nbtunnel_plane")
        for rec in records:
            if rec.kind in ("preamble", "rpc-signature") or plane is None:
                plane = rec.plane if rec.kind != "rpc-signature" else "control"
        flow.metadata["nbtunnel_plane"] = plane or ("control" if sid == 0 else "data")
        flow.metadata.setdefault("nbtunnel", []).extend(
            f"{r.kind}: {r.summary}" for r in records if r.kind != "body")
        if self.store is not None:
            for rec in records:
                if rec.kind != "body":
                    self.store.add(Record("tunnel-mitm", message.timestamp, rec.plane,
                                          rec.summary, decoder.direction, sid, kind=rec.kind,
                                          fields=dict(rec.fields)))

    def tcp_end(self, flow: Any) -> None:
        for from_client in (True, False):
            self._decoders.pop((flow.id, from_client), None)


addons = [TunnelDecodeAddon()]
