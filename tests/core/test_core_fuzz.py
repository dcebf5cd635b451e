"""Property tests: every decoder either succeeds or raises its typed error (DecodeError /
ProtocolError, CredentialsError for credentials), with work bounded by its input.

Each target runs twice: a fast derandomized pass in the default suite, and a long randomized
pass behind the `fuzz` marker (`pytest -m fuzz tests/core`; NBTUNNEL_FUZZ_EXAMPLES examples per
target, 5000 by default).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from core_vectors import vector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtunnel.core import capnp_read
from nbtunnel.core import rpcmsg as m
from nbtunnel.core import schema as s
from nbtunnel.core.capnp_read import MessageReader, StructReader, read_message
from nbtunnel.core.credentials import Credentials, CredentialsError
from nbtunnel.core.decode import StreamDecoder
from nbtunnel.core.errors import DecodeError, ProtocolError
from nbtunnel.core.h2headers import decode_serialized_headers, encode_serialized_headers
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
from nbtunnel.core.wscarrier import WsCarrier
from tests.hostile_capnp import frame, list_ptr, struct_ptr

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=int(os.environ.get("NBTUNNEL_FUZZ_EXAMPLES", "5000")),
                deadline=None, suppress_health_check=list(HealthCheck))


def fuzz_target(*strategies: Any, **kw_strategies: Any
                ) -> Callable[[Callable[..., None]], tuple[Any, Any]]:
    """(fast test, long test marked `fuzz`) for one property."""
    def pair(prop: Callable[..., None]) -> tuple[Any, Any]:
        fast = FAST(given(*strategies, **kw_strategies)(prop))
        long = pytest.mark.fuzz(LONG(given(*strategies, **kw_strategies)(prop)))
        return fast, long
    return pair
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


def message_reader(data: bytes) -> None:
    for start in (0, 6, 8):
        only_protocol_errors(lambda start=start: decode_everything(data[start:]))  # type: ignore[misc]


test_message_reader, test_message_reader_long = fuzz_target(anything)(message_reader)


def head_parser(data: bytes, side: str, chunk: int) -> None:
    def run() -> None:
        parser = HeadParser(side)  # type: ignore[arg-type]
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
    only_protocol_errors(run)


test_head_parser, test_head_parser_long = fuzz_target(
    anything, st.sampled_from(["request", "response"]), st.integers(1, 64))(head_parser)


def head_parser_after_valid_preamble(body: bytes) -> None:
    preamble = bytes.fromhex("0a36cd12a13e") + PROTOCOL_VERSION
    for side in ("request", "response"):
        only_protocol_errors(lambda side=side: HeadParser(side).feed(preamble + body))  # type: ignore[misc]


test_head_parser_after_valid_preamble, test_head_parser_after_valid_preamble_long = fuzz_target(
    st.binary(max_size=200))(head_parser_after_valid_preamble)


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


def role_receive_data(role: str, data: st.DataObject) -> None:
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


test_role_receive_data, test_role_receive_data_long = fuzz_target(
    role=st.sampled_from(sorted(ROLES)), data=st.data())(role_receive_data)


def stream_decoder_never_raises(data: bytes, direction: str, chunk: int) -> None:
    dec = StreamDecoder(direction)  # type: ignore[arg-type]
    records = []
    for i in range(0, len(data), chunk):
        records += dec.feed(data[i : i + chunk])
    records += dec.close()
    assert sum(1 for r in records if r.kind == "error") <= 1


test_stream_decoder_never_raises, test_stream_decoder_never_raises_long = fuzz_target(
    anything, st.sampled_from(["c2e", "e2c"]), st.integers(1, 100))(stream_decoder_never_raises)


metadata = st.lists(st.tuples(
    st.one_of(st.sampled_from(["HttpMethod", "HttpHost", "HttpStatus", "HttpHeader:X",
                               "HttpHeader:", "HttpHeader:a:b"]), st.text(max_size=12)),
    st.text(max_size=12)), max_size=6)


def http_parsers(dest: str, meta: list[tuple[str, str]]) -> None:
    only_protocol_errors(lambda: parse_http_request(ConnectRequest(dest, ConnectionType.HTTP,
                                                                   meta)))
    only_protocol_errors(lambda: parse_http_response(ConnectResponse("", meta)))


test_http_parsers, test_http_parsers_long = fuzz_target(
    st.text(max_size=40), metadata)(http_parsers)


# --- structure-aware hostile messages: amplification must stay within the budget -----------

@st.composite
def hostile_message(draw: st.DrawFn) -> bytes:
    """Random pointer soup: huge list counts, zero-size composite tags, aliasing offsets."""
    n = draw(st.integers(2, 24))
    words = [struct_ptr(0, draw(st.integers(0, 2)), draw(st.integers(1, 4)))]
    for _ in range(n - 1):
        kind = draw(st.integers(0, 6))
        off = draw(st.integers(-4, n))
        if kind == 0:
            words.append(struct_ptr(off, draw(st.integers(0, 3)), draw(st.integers(0, 4))))
        elif kind == 1:
            count = draw(st.sampled_from([0, 1, 2, 7, 1000, 1 << 20, (1 << 29) - 1]))
            words.append(list_ptr(off, draw(st.integers(0, 7)), count))
        elif kind == 2:  # a composite tag: element count in the offset field
            elements = draw(st.sampled_from([0, 1, 5, 1 << 16, (1 << 29) - 1]))
            words.append(struct_ptr(elements, draw(st.integers(0, 2)), draw(st.integers(0, 2))))
        elif kind == 3:  # far pointer (landing pad in segment 0)
            words.append(2 | ((off & 0x1FFFFFFF) << 3) | (draw(st.integers(0, 1)) << 2))
        elif kind == 4:  # capability
            words.append(3 | (draw(st.integers(0, 5)) << 32))
        elif kind == 5:
            words.append(draw(st.integers(0, (1 << 64) - 1)))
        else:
            words.append(0)
    return frame(words)


def amplification_is_bounded(raw: bytes) -> None:
    """Every list element turned into an object was paid for by the traversal budget."""
    built = [0]
    readers: list[MessageReader] = []
    real_list_structs, real_read = capnp_read.list_structs, capnp_read.read_message

    def count(msg: MessageReader, info: capnp_read.ListInfo,
              depth: int) -> list[StructReader]:
        out = real_list_structs(msg, info, depth)
        built[0] += len(out)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(capnp_read, "list_structs", count)
    try:
        reader, _ = real_read(raw)
        readers.append(reader)
        only_protocol_errors(lambda: walk(reader.root()))
        only_protocol_errors(lambda: m.decode_message(reader.root()))
    except ProtocolError:
        return
    finally:
        mp.undo()
    assert built[0] <= readers[0].traversed <= readers[0].limit
    assert readers[0].limit <= max(capnp_read.TRAVERSAL_FLOOR_WORDS, len(raw))


test_amplification_is_bounded, test_amplification_is_bounded_long = fuzz_target(
    hostile_message())(amplification_is_bounded)


# --- the other decoders ----------------------------------------------------------------------

serialized_headers = st.one_of(
    st.text(max_size=80),
    st.lists(st.tuples(st.text(min_size=1, max_size=8).filter(lambda t: t.isascii()),
                       st.text(max_size=8).filter(lambda t: t.isascii())), max_size=4)
    .map(lambda pairs: encode_serialized_headers(pairs)),
    st.builds(lambda a, b: a + b, st.text(alphabet="AB=:;+/é\x00☃", max_size=20),
              st.text(alphabet="YQ:;=", max_size=20)),
)


def serialized_headers_decode(value: str) -> None:
    try:
        decode_serialized_headers(value)
    except DecodeError:
        pass


test_serialized_headers, test_serialized_headers_long = fuzz_target(
    serialized_headers)(serialized_headers_decode)


def ws_carrier_receive(data: bytes, client: bool, chunk: int) -> None:
    carrier = WsCarrier(client=client)

    def run() -> None:
        for i in range(0, len(data), chunk):
            carrier.receive(data[i : i + chunk])
            carrier.data_to_send()
    only_protocol_errors(run)


test_ws_carrier, test_ws_carrier_long = fuzz_target(
    st.one_of(st.binary(max_size=300),
              st.builds(lambda op, n, rest: bytes([0x80 | op, n]) + rest,
                        st.integers(0, 15), st.integers(0, 255), st.binary(max_size=200))),
    st.booleans(), st.integers(1, 64))(ws_carrier_receive)


tokens = st.one_of(
    st.text(max_size=120),
    st.binary(max_size=120).map(lambda b: __import__("base64").b64encode(b).decode()),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                     st.sampled_from(["a", "t", "s", "e", "AccountTag", "TunnelID",
                                      "TunnelSecret", "Endpoint"]), inner, max_size=5),
                 max_leaves=10)
    .map(lambda doc: __import__("base64").b64encode(
        __import__("json").dumps(doc).encode()).decode()),
)


def credentials_parse(token: str) -> None:
    for parse in (Credentials.from_token, Credentials.from_file_json):
        try:
            parse(token)
        except CredentialsError:
            pass
    try:
        Credentials.from_file_json(__import__("base64").b64decode(token + "==").decode(
            "utf-8", "replace"))
    except (CredentialsError, ValueError):
        pass


test_credentials, test_credentials_long = fuzz_target(tokens)(credentials_parse)


h2_names = st.sampled_from([":status", ":method", ":path", ":authority", ":scheme",
                            "cf-cloudflared-response-meta", "cf-cloudflared-response-headers",
                            "cf-cloudflared-proxy-connection-upgrade", "cf-cloudflared-proxy-src",
                            "content-length", "sec-websocket-accept", "x-a"])
h2_values = st.one_of(st.text(max_size=30), st.sampled_from(
    ['{"src":"origin"}', '{"src":"cloudflared"}', "[" * 5000, '{"src":' * 3000, "websocket",
     "WC1B:YQ", "WC1B:\u00e9"]))
h2_heads = st.lists(st.tuples(h2_names, h2_values), max_size=8)


def h2_head_mapping(status: int, headers: list[tuple[str, str]], flag: bool) -> None:
    """The HTTP/2 head mappings both roles apply to what the other side sent."""
    from nbtunnel.core.h2headers import connect_request, connect_response

    only_protocol_errors(lambda: connect_response(status, headers, websocket=flag))
    only_protocol_errors(lambda: connect_request(headers, ended=flag))


test_h2_head_mapping, test_h2_head_mapping_long = fuzz_target(
    st.integers(0, 1000), h2_heads, st.booleans())(h2_head_mapping)
