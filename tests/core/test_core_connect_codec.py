"""The one-pass ConnectRequest/ConnectResponse codec agrees with the generic Cap'n Proto
builder and reader: same bytes out, same value or DecodeError in, never anything else."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from core_vectors import VECTORS, vector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtunnel.core import connect_codec
from nbtunnel.core.capnp_read import frame_length
from nbtunnel.core.connect_codec import decode_head
from nbtunnel.core.errors import DecodeError
from nbtunnel.core.streams import (
    ConnectionType,
    ConnectRequest,
    ConnectResponse,
    decode_request_message,
    decode_response_message,
    encode_connect_request,
    encode_connect_request_generic,
    encode_connect_response,
    encode_connect_response_generic,
)

FAST = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
DATA_FILES = sorted(os.path.basename(p) for p in glob.glob(str(VECTORS / "quic-data-*.bin")))
text = st.text(max_size=40)
metadata = st.lists(st.tuples(text, text), max_size=12)
requests = st.builds(ConnectRequest, text, st.sampled_from(list(ConnectionType)), metadata)
responses = st.builds(ConnectResponse, text, metadata)


def message_of(stream_head: bytes) -> bytes:
    """The framed message after the 8-byte preamble."""
    n = frame_length(stream_head[8:])
    assert n is not None
    return stream_head[8 : 8 + n]


def outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except DecodeError:
        return DecodeError


@pytest.mark.parametrize("name", DATA_FILES)
def test_golden_vectors_take_the_fast_path(name: str) -> None:
    """cloudflared's own heads have the canonical shape: no fallback on real traffic."""
    message = message_of(vector(name))
    assert decode_head(message, 1 if "e2c" in name else 0) is not None
    decode = decode_request_message if "e2c" in name else decode_response_message
    assert decode(message) == decode(message, fast=False)


def _refuse(message: bytes, min_data_words: int) -> None:
    raise AssertionError("decode_head fell back to the general reader")


def canonical_only() -> Any:
    """decode_head may not leave its one-comparison-per-pointer path."""
    return mock.patch.object(connect_codec, "_decode_general", _refuse)


@pytest.mark.parametrize("name", DATA_FILES)
def test_golden_vectors_have_the_canonical_layout(name: str) -> None:
    """What go-capnp writes is read without the general reader's pointer walk."""
    with canonical_only():
        assert decode_head(message_of(vector(name)), 1 if "e2c" in name else 0) is not None


@FAST
@given(requests, responses)
def test_our_heads_have_the_canonical_layout(req: ConnectRequest, resp: ConnectResponse) -> None:
    with canonical_only():
        got = decode_head(message_of(encode_connect_request(req)), 1)
        assert got == (int(req.type), req.dest, req.metadata)
        got = decode_head(message_of(encode_connect_response(resp)), 0)
        assert got is not None and got[1:] == (resp.error, resp.metadata)


def test_layout_caches_are_bounded_and_agree_with_fresh_layouts() -> None:
    """Heads of every text size in turn (a peer chooses the sizes) cannot grow the layout
    caches past their bounds, and a cached layout gives the same bytes and texts as a
    fresh one."""
    def head(i: int) -> ConnectResponse:
        return ConnectResponse("", [("HttpStatus", "200"), ("HttpHeader:X", "v" * i)])

    limit = max(connect_codec._MAX_SHAPES, connect_codec._MAX_LAYOUTS) + 40
    first = [encode_connect_response(head(i)) for i in range(limit)]
    assert len(connect_codec._SHAPES) <= connect_codec._MAX_SHAPES
    assert len(connect_codec._LAYOUTS) <= connect_codec._MAX_LAYOUTS
    for i in (0, 1, limit - 1):
        raw = encode_connect_response(head(i))
        assert raw == first[i] == encode_connect_response_generic(head(i))
        assert decode_response_message(message_of(raw)) == head(i)
    wide = ConnectResponse("", [(f"HttpHeader:X-{i}", "v") for i in range(65)])  # not cached
    shapes, layouts = dict(connect_codec._SHAPES), dict(connect_codec._LAYOUTS)
    raw = encode_connect_response(wide)
    assert raw == encode_connect_response_generic(wide)
    assert decode_response_message(message_of(raw)) == wide
    assert (connect_codec._SHAPES, connect_codec._LAYOUTS) == (shapes, layouts)


@FAST
@given(requests)
def test_request_bytes_match_the_generic_builder(req: ConnectRequest) -> None:
    raw = encode_connect_request(req)
    assert raw == encode_connect_request_generic(req)
    assert decode_request_message(message_of(raw)) == req


@FAST
@given(responses)
def test_response_bytes_match_the_generic_builder(resp: ConnectResponse) -> None:
    raw = encode_connect_response(resp)
    assert raw == encode_connect_response_generic(resp)
    assert decode_response_message(message_of(raw)) == decode_response_message(
        message_of(raw), fast=False)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid head message with words overwritten, bits flipped or bytes inserted (the
    framing is fixed up so the message reaches the decoders)."""
    if draw(st.booleans()):
        base = message_of(encode_connect_request(draw(requests)))
    else:
        base = message_of(vector(draw(st.sampled_from(DATA_FILES))))
    body = bytearray(base[8:])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, max(len(body) - 1, 0)))
        if op == 0 and body:
            body[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and len(body) >= 8:
            word = pos // 8 * 8
            body[word : word + 8] = draw(st.binary(min_size=8, max_size=8))
        else:
            body[pos:pos] = bytes(8 * draw(st.integers(0, 2)))
    body = body[: len(body) // 8 * 8]
    return bytes(4) + (len(body) // 8).to_bytes(4, "little") + bytes(body)


@FAST
@given(mutated())
def test_fast_and_generic_readers_agree_on_damaged_messages(message: bytes) -> None:
    for fast_fn, slow_fn in (
        (lambda: decode_request_message(message), lambda: decode_request_message(
            message, fast=False)),
        (lambda: decode_response_message(message), lambda: decode_response_message(
            message, fast=False)),
    ):
        assert outcome(fast_fn) == outcome(slow_fn)


@FAST
@given(st.binary(max_size=400), st.integers(0, 2))
def test_fast_reader_never_raises(raw: bytes, min_data_words: int) -> None:
    got = decode_head(raw, min_data_words)
    assert got is None or isinstance(got, tuple)


def test_aliased_texts_fall_back_to_the_budgeted_reader() -> None:
    """Entries pointing at one shared text would make the work quadratic in the size: the
    fast reader declines, the generic one decides under its traversal budget."""
    req = ConnectRequest("", ConnectionType.HTTP, [("k" * 200, "")] + [("", "")] * 40)
    message = bytearray(message_of(encode_connect_request(req)))
    # every entry's key pointer -> the first entry's key text
    words = len(message) // 8
    tag = next(i for i in range(words) if int.from_bytes(message[8 * i : 8 * i + 8], "little")
               == (41 << 2 | 2 << 48))
    first = int.from_bytes(message[8 * (tag + 1) : 8 * (tag + 2)], "little")
    target = tag + 2 + ((first & 0xFFFFFFFF) >> 2)
    for k in range(1, 41):
        at = tag + 1 + 2 * k
        ptr = (first & ~0xFFFFFFFF) | ((target - at - 1) << 2) | 1
        message[8 * at : 8 * at + 8] = ptr.to_bytes(8, "little")
    assert decode_head(bytes(message), 1) is None
    assert outcome(lambda: decode_request_message(bytes(message))) == outcome(
        lambda: decode_request_message(bytes(message), fast=False))


@FAST
@given(requests, st.data())
def test_a_cached_layout_reads_as_the_first_sight_does(req: ConnectRequest,
                                                       data: st.DataObject) -> None:
    """The first head of a layout is read pointer by pointer, later ones by the cached
    struct: same result, and a later head whose bytes differ where the layout does not look
    (a text's NUL, a text's bytes) still agrees with the generic reader."""
    message = message_of(encode_connect_request(req))
    first = decode_request_message(message)
    assert first == decode_request_message(message) == decode_request_message(message)
    damaged = bytearray(message)
    pos = data.draw(st.integers(0, len(damaged) - 1))
    damaged[pos] ^= 1 << data.draw(st.integers(0, 7))
    for _ in range(3):  # first sight, then cached
        assert outcome(lambda: decode_request_message(bytes(damaged))) == outcome(
            lambda: decode_request_message(bytes(damaged), fast=False))
