"""The protocol hooks both backends share (their QuicConnectionProtocol APIs are the same).

Mixed in before the library's `QuicConnectionProtocol`: library events become typed calls on
the owning `QuicTunnelConnection`, every transmit is bracketed by the credit/back-pressure
hooks, and a datagram received inside a `UdpEndpoint` batch is processed (events + ACK) once
per batch. Only public library API is used here; the two things the libraries offer no public
way to do (run their event pump, stop their timers) are the adapter's
`_process_library_events` / `_cancel_library_timers` (see `_qh3.py`, `_aioquic.py`).
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any, cast

from nbtunnel.transport.quic.backend import OwnerFactory, ProtocolOwner
from nbtunnel.transport.quic.udp import UdpEndpoint


class ProtocolHooks:
    """Mixin; the library's protocol class (with `transmit()`) must follow it in the MRO."""

    events: ModuleType
    """The library's ``quic.events`` module (set by the adapter)."""
    chunk_event: type | None = None
    """The adapter's event for a run of in-order data of one stream (``stream_id``,
    ``chunks``, ``end_stream``), if its connection coalesces packets' data (``_qh3_lean``)."""

    def __init__(self, quic: Any, owner_factory: OwnerFactory) -> None:
        super().__init__(quic)  # type: ignore[call-arg]
        self.quic = quic
        self._hooks_loop = asyncio.get_running_loop()
        self._endpoint: UdpEndpoint | None = None
        self.owner: ProtocolOwner | None = None
        self.owner = owner_factory(quic, cast(Any, self))  # a full TunnelProtocol once mixed in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._endpoint = transport if isinstance(transport, UdpEndpoint) else None
        super().connection_made(transport)  # type: ignore[misc]

    def quic_event_received(self, event: Any) -> None:
        owner = self.owner
        if owner is None:
            return
        if event.__class__ is self.chunk_event:
            chunks: Any = event
            owner._on_stream_chunks(chunks.stream_id, chunks.chunks, chunks.end_stream)
            return
        ev = self.events
        if isinstance(event, ev.StreamDataReceived):
            owner._on_stream_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, ev.StreamReset):
            owner._on_stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, ev.StopSendingReceived):
            owner._on_stop_sending(event.stream_id, event.error_code)
        elif isinstance(event, ev.DatagramFrameReceived):
            owner._on_datagram_frame(event.data)
        elif isinstance(event, ev.HandshakeCompleted):
            owner._on_handshake_completed(event.alpn_protocol)
        elif isinstance(event, ev.ConnectionTerminated):
            owner._on_connection_terminated(event.error_code, event.reason_phrase)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        now = self._hooks_loop.time()
        owner = self.owner
        if owner is not None:
            owner._on_datagram(addr, now)
        self.quic.receive_datagram(cast(bytes, data), addr, now=now)
        # In a UdpEndpoint batch, process events and transmit (ACK) once, at its end.
        endpoint = self._endpoint
        if endpoint is None or not endpoint.defer(self._flush_received):
            self._flush_received()

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        """Several datagrams from ``addr`` at once (a GRO train from our ``UdpEndpoint``, or
        a batch from qh3's client transport): one clock read, and the library takes them in
        one call when it can (``receive_datagrams``)."""
        now = self._hooks_loop.time()
        owner = self.owner
        if owner is not None:
            owner._on_datagram(addr, now)
        quic = self.quic
        receive_many = getattr(quic, "receive_datagrams", None)
        if receive_many is not None:
            receive_many(datagrams, addr, now)
        else:
            for data in datagrams:
                quic.receive_datagram(data, addr, now=now)
        endpoint = self._endpoint
        if endpoint is None or not endpoint.defer(self._flush_received):
            self._flush_received()

    def _flush_received(self) -> None:
        self._process_library_events()
        self.transmit()

    def transmit(self) -> None:
        owner = self.owner
        if owner is not None:
            owner._before_transmit()
        super().transmit()  # type: ignore[misc]
        if owner is not None:
            owner._after_transmit()

    def shutdown(self) -> None:
        """Detach the owner and stop the library's timers: nothing fires after a drop."""
        self.owner = None
        self._cancel_library_timers()

    # implemented by each library's adapter (private library state) ----------------------

    def _process_library_events(self) -> None:
        raise NotImplementedError

    def _cancel_library_timers(self) -> None:
        raise NotImplementedError
