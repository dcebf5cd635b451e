"""The protocol hooks both backends share (their QuicConnectionProtocol APIs are the same).

Mixed in before the library's `QuicConnectionProtocol`: events go to the owning
`QuicTunnelConnection`, every transmit is bracketed by the credit/back-pressure hooks, and a
datagram received inside a `UdpEndpoint` batch is processed (events + ACK) once per batch.
"""

from __future__ import annotations

from typing import Any, cast

from ._backend import OwnerFactory, ProtocolOwner
from ._udp import UdpEndpoint


class ProtocolHooks:
    """Mixin; expects the library protocol's `_quic`, `_loop`, `_transport`, `_timer`,
    `_transmit_task`, `_process_events()` and `transmit()` next in the MRO."""

    _quic: Any
    _loop: Any
    _transport: Any
    _timer: Any
    _transmit_task: Any

    def __init__(self, quic: Any, owner_factory: OwnerFactory) -> None:
        super().__init__(quic)  # type: ignore[call-arg]
        self.owner: ProtocolOwner | None = None
        self.owner = owner_factory(quic, cast(Any, self))  # a full TunnelProtocol once mixed in

    def quic_event_received(self, event: Any) -> None:
        if self.owner is not None:
            self.owner._on_event(event)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.owner is not None:
            self.owner._on_datagram()
        self._quic.receive_datagram(cast(bytes, data), addr, now=self._loop.time())
        # In a UdpEndpoint batch, process events and transmit (ACK) once, at its end.
        transport = self._transport
        if not (isinstance(transport, UdpEndpoint) and transport.defer(self._flush_received)):
            self._flush_received()

    def _flush_received(self) -> None:
        self._process_events()  # type: ignore[attr-defined]
        self.transmit()

    def transmit(self) -> None:
        owner = self.owner
        if owner is not None:
            owner._before_transmit()
        super().transmit()  # type: ignore[misc]
        if owner is not None:
            owner._after_transmit()

    def shutdown(self) -> None:
        self.owner = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transmit_task is not None:
            self._transmit_task.cancel()
            self._transmit_task = None
