#!/usr/bin/env python3
"""qh3 alone: CPU per MB of a bulk QUIC transfer between two in-process connections.

    .venv/bin/python bench/quic_micro.py [--mb 50] [--dir down|up] [--datagram 1452] [--profile]

No sockets, no event loop: our qh3 adapter's client and server ``QuicConnection`` objects
(``prepare_connection`` applied, so our pacer and fast paths are in) exchange datagrams in
memory under a virtual clock (``--rtt``), with the receiver processing up to 64 datagrams per
batch as ``UdpEndpoint`` delivers them. It prints the sender's and the receiver's CPU per MB
of library work (building, parsing, encrypting, ACK and loss processing), the part of a
tunnel's cost that grows with the packet count; ``--loss`` drops every n-th data datagram.
``down`` = the client (connector) sends, ``up`` = the server (edge) sends.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbtunnel.transport.quic import get_backend
from nbtunnel.transport.quic.backend import QuicSettings
from nbtunnel.transport.tls import LocalCA

MB = 1 << 20
BATCH = 64
CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 443)


class Side:
    def __init__(self, quic: Any, addr: tuple[str, int]) -> None:
        self.quic = quic
        self.addr = addr
        self.cpu = 0.0
        self.received = bytearray()
        self.received_len = 0
        self.digest = hashlib.sha256()
        self.fin = False

    def receive(self, datagrams: list[bytes], peer: tuple[str, int], now: float,
                keep: bool) -> list[bytes]:
        """Deliver datagrams in batches; returns what the side sends back."""
        out: list[bytes] = []
        quic = self.quic
        t0 = time.process_time()
        many = getattr(quic, "receive_datagrams", None)
        for start in range(0, len(datagrams), BATCH):
            if many is not None:
                many(datagrams[start:start + BATCH], peer, now)
            else:
                for data in datagrams[start:start + BATCH]:
                    quic.receive_datagram(data, peer, now)
            event = quic.next_event()
            while event is not None:
                chunks = getattr(event, "chunks", None)
                if chunks is None:
                    data = getattr(event, "data", None)
                    chunks = [data] if data is not None and hasattr(event, "stream_id") else []
                for data in chunks:
                    self.received_len += len(data)
                    if keep:
                        self.digest.update(data)
                if chunks and event.end_stream:
                    self.fin = True
                event = quic.next_event()
            out.extend(d for d, _ in quic.datagrams_to_send(now))
        self.cpu += time.process_time() - t0
        return out

    def send(self, now: float) -> list[bytes]:
        t0 = time.process_time()
        timer = self.quic.get_timer()
        if timer is not None and timer <= now:
            self.quic.handle_timer(now)
        out = [d for d, _ in self.quic.datagrams_to_send(now)]
        self.cpu += time.process_time() - t0
        return out


def handshake(datagram: int) -> tuple[Side, Side]:
    backend = get_backend("qh3")
    ca = LocalCA.load_or_create(Path(tempfile.gettempdir()) / "nbtunnel-quic-micro-ca")
    settings = QuicSettings(backend="qh3", loopback_datagram_size=datagram if datagram > 1452
                            else 0)
    ccfg = backend.client_configuration(settings, "localhost", str(ca.ca_path), True)
    scfg = backend.server_configuration(settings, str(ca.cert_path), str(ca.key_path))
    client = backend.new_client(ccfg, settings)
    backend.prepare_connection(client, settings, lambda _sid: None)
    backend.peer_address(client, settings, SERVER_ADDR)
    now = 0.0
    client.connect(SERVER_ADDR, now=now)
    first = [d for d, _ in client.datagrams_to_send(now)]
    from qh3._hazmat import Buffer
    from qh3.quic.connection import QuicConnection
    from qh3.quic.packet import pull_quic_header

    header = pull_quic_header(Buffer(data=first[0]), host_cid_length=8)
    server = QuicConnection(configuration=scfg,
                            original_destination_connection_id=header.destination_cid)
    backend.prepare_connection(server, settings, lambda _sid: None)
    backend.peer_address(server, settings, CLIENT_ADDR)
    c, s = Side(client, CLIENT_ADDR), Side(server, SERVER_ADDR)
    to_server = first
    for _ in range(50):
        now += 0.001
        to_client = s.receive(to_server, CLIENT_ADDR, now, False)
        to_server = c.receive(to_client, SERVER_ADDR, now, False)
        to_server += c.send(now)
        if client._handshake_complete and server._handshake_complete and not to_server:
            break
    c.cpu = s.cpu = 0.0
    return c, s


def run(args: argparse.Namespace) -> dict[str, float]:
    client, server = handshake(args.datagram)
    sender, receiver = (client, server) if args.dir == "down" else (server, client)
    sq = sender.quic
    if args.dir == "down":
        stream_id = sq.get_next_available_stream_id()
    else:  # the client opens the stream (as a request would), the server answers on it
        stream_id = client.quic.get_next_available_stream_id()
        client.quic.send_stream_data(stream_id, b"GET")
        server.receive(client.send(0.05), CLIENT_ADDR, 0.05, False)
    total = args.mb * MB
    chunk = bytes(range(256)) * 256  # 64 KiB
    written = 0
    now = 0.1
    step = args.rtt / 2
    in_transit: list[tuple[float, list[bytes], bool]] = []  # (arrival, datagrams, to_receiver)
    count = 0
    rounds = 0
    while receiver.received_len < total or not receiver.fin:
        rounds += 1
        if rounds > 10_000_000:
            raise SystemExit("stuck")
        while (written < total and sq._streams.get(stream_id) is None) or (
            written < total and sum(b - a for a, b in sq._streams[stream_id].sender._pending)
            < 2 * MB
        ):
            n = min(len(chunk), total - written)
            t0 = time.process_time()
            sq.send_stream_data(stream_id, chunk[:n], end_stream=written + n == total)
            sender.cpu += time.process_time() - t0
            written += n
        out = sender.send(now)
        if out:
            kept = []
            for d in out:
                count += 1
                if args.loss and count % args.loss == 0:
                    continue
                kept.append(d)
            in_transit.append((now + step, kept, True))
        now += step / 4
        due = [t for t in in_transit if t[0] <= now]
        in_transit = [t for t in in_transit if t[0] > now]
        for _at, datagrams, to_receiver in due:
            if to_receiver:
                acks = receiver.receive(datagrams, sender.addr, now, args.check)
                if acks:
                    in_transit.append((now + step, acks, False))
            else:
                more = sender.receive(datagrams, receiver.addr, now, False)
                if more:
                    in_transit.append((now + step, more, True))
        t = receiver.quic.get_timer()
        if t is not None and t <= now:
            acks = receiver.send(now)
            if acks:
                in_transit.append((now + step, acks, False))
    mb = total / 1e6
    result = {
        "sender_ms_per_mb": 1e3 * sender.cpu / mb,
        "receiver_ms_per_mb": 1e3 * receiver.cpu / mb,
        "datagrams": count,
        "virtual_s": now,
        "lost": sq._loss._loss_total,
    }
    if args.check:
        expect = hashlib.sha256()
        left = total
        while left:
            n = min(len(chunk), left)
            expect.update(chunk[:n])
            left -= n
        result["sha_ok"] = float(expect.digest() == receiver.digest.digest())
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--dir", choices=["down", "up"], default="down")
    ap.add_argument("--datagram", type=int, default=1452)
    ap.add_argument("--rtt", type=float, default=0.0004, help="virtual round trip (s)")
    ap.add_argument("--loss", type=int, default=0, help="drop every n-th data datagram")
    ap.add_argument("--check", action="store_true", help="sha256 what arrives")
    ap.add_argument("--profile", choices=["sender", "receiver", "both"])
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1, help="runs; the lowest CPU figures")
    args = ap.parse_args()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        result = run(args)
        prof.disable()
        st = pstats.Stats(prof)
        st.sort_stats("tottime").print_stats(args.top)
        calls = sum(v[1] for v in st.stats.values())  # type: ignore[attr-defined]
        print(f"Python calls per MB (both sides): {calls / (args.mb * MB / 1e6):.0f}")
    else:
        runs = [run(args) for _ in range(args.repeat)]
        result = runs[0]
        for key in ("sender_ms_per_mb", "receiver_ms_per_mb"):
            result[key] = min(r[key] for r in runs)
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
