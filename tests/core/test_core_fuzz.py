"""Property tests: every decoder either succeeds or raises DecodeError/ProtocolError, fast."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from core_vectors import vector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtunnel.core import rpcmsg as m
from nbtunnel.core import schema as s
from nbtunnel.core.capnp_read import StructReader, read_message
from nbtunnel.core.decode import StreamDecoder
from nbtunnel.core.errors import ProtocolError
from nbtunnel.core.httpmeta import parse_http_request, parse_http_response
from nbtunnel.core.registration import (
    CloudflaredServer,
    ConfigurationClient,
    RegistrationClient,
    RegistrationServer,
)
from nbtunnel.core.streams import (
    PROTOCOL_VERSION,
    ConnectionType,
    ConnectRequest,
    ConnectResponse,
    HeadParser,
)

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
GOLDEN = {name: vector(name) for name in [
    "quic-control-c2e.bin", "quic-control-e2c.bin", "quic-data-get-e2c.bin",
    "quic-data-get-c2e.bin", "quic-data-refused-c2e.bin", "quic-data-ws-e2c.bin",
    "quic-rpc-update-configuration-e2c.bin", "quic-rpc-update-configuration-c2e.bin"]}


@st.composite
def mutated(draw: st.DrawFn, name: str | None = None) -> bytes:
    data = bytearray(GOLDEN[name] if name else draw(st.sampled_from(list(GOLDEN.values()))))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1 and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 2:
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(max_size=16))
    return bytes(data)


anything = st.one_of(st.binary(max_size=300), mutated())


def only_protocol_errors(fn: Callable[[], object]) -> None:
    try:
        fn()
    except ProtocolError:
        pass


def walk(sr: StructReader | None, depth: int = 0) -> None:
    """Touch every pointer of a struct in every way a decoder might."""
    if sr is None or depth > 8:
        return
    sr.u64(0)
    for i in range(min(sr.ptr_count, 8)):
        for reader in (sr.text, sr.data, sr.texts, sr.capability):
            only_protocol_errors(lambda reader=reader, i=i: reader(i))  # type: ignore[misc]
        only_protocol_errors(lambda i=i: walk_list(sr, i, depth))  # type: ignore[misc]
        only_protocol_errors(lambda i=i: walk(sr.struct(i), depth + 1))  # type: ignore[misc]


def walk_list(sr: StructReader, i: int, depth: int) -> None:
    for x in sr.structs(i)[:8]:
        walk(x, depth + 1)


def decode_everything(raw: bytes) -> None:
    reader, _ = read_message(raw)
    root = reader.root()
    walk(root)
    msg = m.decode_message(root)
    if isinstance(msg, m.Call) and msg.params is not None:
        only_protocol_errors(lambda: s.read_register_params(msg.params))  # type: ignore[arg-type]
        only_protocol_errors(lambda: s.read_update_configuration_params(msg.params))  # type: ignore[arg-type]
    if isinstance(msg, m.Return):
        only_protocol_errors(lambda: s.read_register_results(msg.content))
        only_protocol_errors(lambda: s.read_update_configuration_results(msg.content))


@FAST
@given(anything)
def test_message_reader(data: bytes) -> None:
    for start in (0, 6, 8):
        only_protocol_errors(lambda start=start: decode_everything(data[start:]))  # type: ignore[misc]


@FAST
@given(anything, st.sampled_from(["request", "response"]), st.integers(1, 64))
def test_head_parser(data: bytes, side: str, chunk: int) -> None:
    def run() -> None:
        parser = HeadParser(side)  # type: ignore[arg-type]
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
    only_protocol_errors(run)


@FAST
@given(st.binary(max_size=200))
def test_head_parser_after_valid_preamble(body: bytes) -> None:
    preamble = bytes.fromhex("0a36cd12a13e") + PROTOCOL_VERSION
    for side in ("request", "response"):
        only_protocol_errors(lambda side=side: HeadParser(side).feed(preamble + body))  # type: ignore[misc]


def _client_with_register() -> RegistrationClient:
    c = RegistrationClient()
    c.register(s.RegisterConnectionParams(
        s.TunnelAuth("a", b"s"), b"t", 0,
        s.ConnectionOptions(s.ClientInfo(b"c", [], "v", "a"))))
    c.data_to_send()
    return c


def _config_client() -> ConfigurationClient:
    c = ConfigurationClient()
    c.update_configuration(1, b"{}")
    c.data_to_send()
    return c


ROLES: dict[str, tuple[Callable[[], object], str]] = {
    "registration-server": (RegistrationServer, "quic-control-c2e.bin"),
    "registration-client": (_client_with_register, "quic-control-e2c.bin"),
    "cloudflared-server": (CloudflaredServer, "quic-rpc-update-configuration-e2c.bin"),
    "configuration-client": (_config_client, "quic-rpc-update-configuration-c2e.bin"),
}


@pytest.mark.parametrize("role", sorted(ROLES))
@FAST
@given(data=st.data())
def test_role_receive_data(role: str, data: st.DataObject) -> None:
    factory, golden = ROLES[role]
    raw = data.draw(st.one_of(st.binary(max_size=300), mutated(golden)))
    skip = 6 if golden == "quic-rpc-update-configuration-e2c.bin" else 0
    chunk = data.draw(st.integers(1, 200))
    obj = factory()

    def run() -> None:
        for i in range(skip, len(raw), chunk):
            obj.receive_data(raw[i : i + chunk])  # type: ignore[attr-defined]
            obj.data_to_send()  # type: ignore[attr-defined]
    only_protocol_errors(run)


@FAST
@given(anything, st.sampled_from(["c2e", "e2c"]), st.integers(1, 100))
def test_stream_decoder_never_raises(data: bytes, direction: str, chunk: int) -> None:
    dec = StreamDecoder(direction)  # type: ignore[arg-type]
    records = []
    for i in range(0, len(data), chunk):
        records += dec.feed(data[i : i + chunk])
    records += dec.close()
    assert sum(1 for r in records if r.kind == "error") <= 1


metadata = st.lists(st.tuples(
    st.one_of(st.sampled_from(["HttpMethod", "HttpHost", "HttpStatus", "HttpHeader:X",
                               "HttpHeader:", "HttpHeader:a:b"]), st.text(max_size=12)),
    st.text(max_size=12)), max_size=6)


@FAST
@given(st.text(max_size=40), metadata)
def test_http_parsers(dest: str, meta: list[tuple[str, str]]) -> None:
    only_protocol_errors(lambda: parse_http_request(ConnectRequest(dest, ConnectionType.HTTP,
                                                                   meta)))
    only_protocol_errors(lambda: parse_http_response(ConnectResponse("", meta)))
