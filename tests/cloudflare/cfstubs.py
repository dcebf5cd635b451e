"""Cloudflare's public pieces, played on 127.0.0.1 for offline tests of the real code path.

- `TestPKI`: a test root and leaves for Cloudflare's names (the edge, the API, the DoT server);
- `DnsStub`: a UDP DNS server answering from a zone dict (dnspython builds the answers, with
  name compression) and recording every question;
- `DotStub`: DNS over TLS (2-byte length framing) with the same zone, recording the SNI;
- `TlsFront`: a TLS terminator in front of a plain HTTP server (the edge's front and API), so
  clients use https:// with Cloudflare's names; it records the SNI of every handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CF_NAMES = ("quic.cftunnel.com", "h2.cftunnel.com", "probe.cftunnel.com",
            "api.trycloudflare.com", "*.trycloudflare.com", "cloudflare-dns.com", "localhost")

Zone = dict[tuple[str, str], list[str]]  # (name, type) -> rdata texts


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestPKI:
    """A root CA in `dir/ca.pem` and one leaf for CF_NAMES in `dir/edge.pem` (LocalCA's file
    names, so an Edge with this state_dir serves the leaf as its own)."""

    __test__ = False

    def __init__(self, directory: Path, names: tuple[str, ...] = CF_NAMES) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nbtunnel test root")])
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(hours=1))
              .not_valid_after(now + dt.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(_key_usage(True), critical=True)
              .add_extension(ski, critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=29))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (directory / "ca-key.pem").write_bytes(_pem_key(ca_key))
        self.cert_path = directory / "edge.pem"
        self.cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        self.key_path = directory / "edge-key.pem"
        self.key_path.write_bytes(_pem_key(key))

    def server_context(self, sni_log: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        if sni_log is not None:
            def on_sni(_obj: object, name: str | None, _ctx: object) -> None:
                sni_log.append(name or "")
            ctx.sni_callback = on_sni  # type: ignore[assignment]
        return ctx


def answer(zone: Zone, wire: bytes, log: list[tuple[str, str]]) -> bytes:
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    question = query.question[0]
    name = question.name.to_text().lower()
    rdtype = dns.rdatatype.to_text(question.rdtype)
    log.append((name, rdtype))
    if (name, rdtype) in zone:
        response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", rdtype,
                                                        zone[(name, rdtype)]))
    elif not any(n == name for n, _ in zone):
        response.set_rcode(dns.rcode.NXDOMAIN)
    response.flags |= dns.flags.RA
    return response.to_wire()  # dnspython compresses names (SRV targets included)


class DnsStub(asyncio.DatagramProtocol):
    """UDP DNS on 127.0.0.1; `refuse` answers REFUSED to everything (a broken resolver)."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.queries: list[tuple[str, str]] = []
        self.refuse = False
        self.transport: asyncio.DatagramTransport | None = None
        self.sockname: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if self.refuse:
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.REFUSED)
            self.transport.sendto(response.to_wire(), addr)
            return
        self.transport.sendto(answer(self.zone, data, self.queries), addr)

    @property
    def address(self) -> str:
        return f"{self.sockname[0]}:{self.sockname[1]}"

    @classmethod
    async def start(cls, zone: Zone) -> DnsStub:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: cls(zone),
                                                       local_addr=("127.0.0.1", 0))
        assert proto.transport is not None
        proto.sockname = proto.transport.get_extra_info("sockname")[:2]
        return proto

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class DotStub:
    """DNS over TLS on 127.0.0.1 (RFC 7858 framing), recording SNIs and questions."""

    def __init__(self, zone: Zone, pki: TestPKI) -> None:
        self.zone = zone
        self.pki = pki
        self.sni: list[str] = []
        self.queries: list[tuple[str, str]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> DotStub:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                 ssl=self.pki.server_context(self.sni))
        return self

    @property
    def address(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                out = answer(self.zone, await reader.readexactly(size), self.queries)
                writer.write(len(out).to_bytes(2, "big") + out)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class TlsFront:
    """TLS on 127.0.0.1 in front of a plain TCP server; records the SNI of each client."""

    def __init__(self, pki: TestPKI, upstream: tuple[str, int]) -> None:
        self.pki = pki
        self.upstream = upstream
        self.sni: list[str] = []
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> TlsFront:
        self.server = await asyncio.start_server(self._serve, host, port,
                                                 ssl=self.pki.server_context(self.sni))
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_w)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(Exception):
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await self.server.wait_closed()
