"""Relays in front of the test edge that read what a connector really sends.

Each `Tap` listens on one loopback address (127.0.0.N) at a fixed port, UDP and TCP, and
forwards to the edge. For QUIC it removes the Initial packet protection (keys come from the
client's destination connection ID, RFC 9001 section 5.2, with aioquic's crypto) and parses the
ClientHello; for TCP it parses the plaintext TLS ClientHello. It records, per client flow,
SNI, ALPN, offered key-share groups and the first datagram's size. A tap with `refuse=True`
drops UDP silently and closes TCP at once: an edge address that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aioquic.buffer import Buffer
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.tls import pull_client_hello


@dataclass
class Hello:
    transport: str  # "quic" or "tcp"
    address: str  # the tap's address (the edge address the client dialed)
    server_name: str | None = None
    alpn: list[str] | None = None
    key_share_groups: list[int] = field(default_factory=list)
    first_datagram: int = 0


def _varint(buf: Buffer) -> int:
    return buf.pull_uint_var()


def client_hello_from_initial(datagram: bytes, original_dcid: bytes | None = None
                              ) -> dict[int, bytes] | None:
    """The CRYPTO frames (offset -> data) of a client Initial, or None. A client's Initial
    keys come from the destination connection ID of its FIRST Initial (RFC 9001 5.2), even
    after it switched to the server's connection ID: pass that one as original_dcid."""
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=8)
    if header.packet_type != QuicPacketType.INITIAL:
        return None
    crypto = CryptoPair()
    crypto.setup_initial(original_dcid or header.destination_cid, is_client=False,
                         version=header.version)
    _, payload, _ = crypto.decrypt_packet(datagram[:header.packet_length], buf.tell(), 0)
    frames = Buffer(data=payload)
    chunks: dict[int, bytes] = {}
    while not frames.eof():
        kind = _varint(frames)
        if kind in (0x00, 0x01):  # PADDING, PING
            continue
        if kind == 0x06:  # CRYPTO
            offset, length = _varint(frames), _varint(frames)
            chunks[offset] = frames.pull_bytes(length)
        elif kind in (0x02, 0x03):  # ACK: skip
            _varint(frames), _varint(frames)
            count = _varint(frames)
            _varint(frames)
            for _ in range(count * 2):
                _varint(frames)
            if kind == 0x03:
                _varint(frames), _varint(frames), _varint(frames)
        else:
            break
    return chunks


def parse_hello(handshake: bytes, hello: Hello) -> bool:
    """Fill hello from a complete ClientHello handshake message; False if incomplete."""
    if len(handshake) < 4 or len(handshake) < 4 + int.from_bytes(handshake[1:4], "big"):
        return False
    parsed = pull_client_hello(Buffer(data=handshake))
    hello.server_name = parsed.server_name
    hello.alpn = list(parsed.alpn_protocols or [])
    hello.key_share_groups = [int(group) for group, _ in parsed.key_share or []]
    return True


class _UdpFlow(asyncio.DatagramProtocol):
    def __init__(self, tap: Tap, client: tuple[str, int]) -> None:
        self.tap, self.client = tap, client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.tap.udp is not None
        self.tap.udp.sendto(data, self.client)


class Tap(asyncio.DatagramProtocol):
    def __init__(self, address: str, edge_udp: tuple[str, int], edge_tcp: tuple[str, int],
                 refuse: bool = False) -> None:
        self.address = address
        self.edge_udp, self.edge_tcp = edge_udp, edge_tcp
        self.refuse = refuse
        self.drop_udp = False  # UDP blocked on the path (TCP still passes)
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.flows: dict[tuple[str, int], _UdpFlow] = {}
        self.crypto: dict[tuple[str, int], dict[int, bytes]] = {}
        self.hellos: list[Hello] = []
        self.udp_packets = 0
        self.errors: list[str] = []
        self.dcid: dict[tuple[str, int], bytes] = {}
        self.tcp_connections = 0
        self._writers: set[asyncio.StreamWriter] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.udp = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.udp_packets += 1
        if self.refuse or self.drop_udp:
            return
        if addr not in self.flows:
            self.flows[addr] = _UdpFlow(self, addr)
            self.crypto[addr] = {}
            self.hellos.append(Hello("quic", self.address, first_datagram=len(data)))
            asyncio.get_running_loop().create_task(self._open_flow(addr, data))
        else:
            self._forward(addr, data)
        self._sniff(addr, data)

    def _sniff(self, addr: tuple[str, int], data: bytes) -> None:
        hello = self.hellos[list(self.flows).index(addr)]
        if hello.server_name is not None or data[0] & 0xF0 != 0xC0:
            return
        try:
            if addr not in self.dcid:
                self.dcid[addr] = pull_quic_header(Buffer(data=data), 8).destination_cid
            found = client_hello_from_initial(data, self.dcid[addr])
        except Exception as exc:  # not an Initial we can read: say why, record nothing
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        if not found:
            return
        chunks = self.crypto[addr]  # retransmissions repeat offsets: reassemble by offset
        chunks.update(found)
        data, end = b"", 0
        for offset in sorted(chunks):
            if offset > end:
                break
            data += chunks[offset][end - offset:]
            end = max(end, offset + len(chunks[offset]))
        try:
            parse_hello(data, hello)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _open_flow(self, addr: tuple[str, int], first: bytes) -> None:
        loop = asyncio.get_running_loop()
        flow = self.flows[addr]
        await loop.create_datagram_endpoint(lambda: flow, remote_addr=self.edge_udp)
        self._forward(addr, first)
        for pending in getattr(flow, "pending", []):
            self._forward(addr, pending)

    def _forward(self, addr: tuple[str, int], data: bytes) -> None:
        flow = self.flows[addr]
        if flow.transport is None:
            flow.pending = [*getattr(flow, "pending", []), data]  # type: ignore[attr-defined]
            return
        flow.transport.sendto(data)

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tcp_connections += 1
        self._writers.add(writer)
        if self.refuse:
            writer.close()
            return
        hello = Hello("tcp", self.address)
        self.hellos.append(hello)
        try:
            up_r, up_w = await asyncio.open_connection(*self.edge_tcp)
        except OSError:
            writer.close()
            return
        self._writers.add(up_w)
        seen = b""

        async def client_to_edge() -> None:
            nonlocal seen
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    if hello.server_name is None and len(seen) < 1 << 16:
                        seen += data
                        # TLS record(s) of type handshake (22): the ClientHello
                        if len(seen) >= 5 and seen[0] == 22:
                            with contextlib.suppress(Exception):
                                parse_hello(seen[5:], hello)
                    up_w.write(data)
                    await up_w.drain()
            with contextlib.suppress(Exception):
                up_w.close()

        async def edge_to_client() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await up_r.read(65536):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

        await asyncio.gather(client_to_edge(), edge_to_client())

    async def start(self, port: int) -> Tap:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.address, port))
        self.tcp = await asyncio.start_server(self._on_tcp, self.address, port)
        return self

    async def close(self) -> None:
        for flow in self.flows.values():
            if flow.transport is not None:
                flow.transport.close()
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
            for writer in list(self._writers):
                writer.close()
            await self.tcp.wait_closed()


async def start_taps(addresses: list[str], edge_udp: tuple[str, int],
                     edge_tcp: tuple[str, int], refuse: frozenset[str] = frozenset()
                     ) -> tuple[int, list[Tap]]:
    """Taps on the same free port of every address (retrying a few ports if one is taken)."""
    import socket

    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        taps: list[Tap] = []
        try:
            for address in addresses:
                taps.append(await Tap(address, edge_udp, edge_tcp,
                                      refuse=address in refuse).start(port))
            return port, taps
        except OSError:
            for tap in taps:
                await tap.close()
    raise OSError("no common free port on the tap addresses")
