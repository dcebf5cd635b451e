"""The lab's stream decoder against every captured RPC / data-stream vector."""

from __future__ import annotations

import pytest
from core_vectors import vector, vector_index

from nbtunnel.core.decode import StreamDecoder, decode_stream

KIND = {"payload": "body"}
FILES = [name for name, f in vector_index().items()
         if name.endswith(".bin") and f.get("messages")]


@pytest.mark.parametrize("name", FILES)
def test_boundaries_and_kinds_match_index(name: str) -> None:
    info = vector_index()[name]
    records = decode_stream(vector(name), info["direction"])
    got = [(r.offset, r.length, r.kind) for r in records]
    want = [(msg["offset"], msg["length"], KIND.get(msg["kind"], msg["kind"]))
            for msg in info["messages"]]
    if name == "quic-rpc-update-configuration-e2c.bin":
        want.insert(0, (0, 6, "rpc-signature"))
    assert got == want
    assert all(r.kind != "error" for r in records)


@pytest.mark.parametrize("name", FILES)
def test_incremental_feeding_gives_the_same_messages(name: str) -> None:
    info = vector_index()[name]
    data = vector(name)
    dec = StreamDecoder(info["direction"])
    records = []
    for i in range(0, len(data), 7):
        records += dec.feed(data[i : i + 7])
    records += dec.close()
    whole = decode_stream(data, info["direction"])
    assert [r for r in records if r.kind != "body"] == [r for r in whole if r.kind != "body"]
    assert sum(r.length for r in records if r.kind == "body") == sum(
        r.length for r in whole if r.kind == "body")


def test_summaries_are_readable() -> None:
    c2e = decode_stream(vector("quic-control-c2e.bin"), "c2e")
    reg = c2e[1]
    assert reg.summary.startswith(
        "registerConnection tunnelId=11111111-2222-3333-4444-555555555555 connIndex=0 "
        "client=2026.8.2 linux_amd64 features=[")
    assert reg.summary.endswith("secret=<redacted 32 bytes>")
    assert reg.fields["account_tag"] == "0123456789abcdef0123456789abcdef"
    assert "xxxx" not in repr(reg.fields)
    clear = decode_stream(vector("quic-control-c2e.bin"), "c2e", redact_secrets=False)[1]
    assert clear.fields["secret"] == (b"x" * 32).hex()
    e2c = decode_stream(vector("quic-control-e2c.bin"), "e2c")
    assert e2c[1].summary == (
        "Return q1 connectionDetails uuid=aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee location=PRB")
    get = decode_stream(vector("quic-data-get-e2c.bin"), "e2c")
    assert get[1].summary == (
        "ConnectRequest http GET http://probe.example/hello?x=1&y=two (6 headers)")
    resp = decode_stream(vector("quic-data-get-c2e.bin"), "c2e")
    assert resp[1].summary == "ConnectResponse 200 (5 headers)"
    assert resp[2].kind == "body" and resp[2].fields == {"bytes": 52}
    cfg = decode_stream(vector("quic-rpc-update-configuration-c2e.bin"), "c2e")
    assert cfg[1].summary == "Return q1 latestAppliedVersion=1 err=''"


def test_truncated_and_garbage_streams_yield_error_records() -> None:
    data = vector("quic-control-c2e.bin")
    records = decode_stream(data[:100], "c2e")
    assert [r.kind for r in records] == ["bootstrap", "error"]
    assert records[-1].offset == 48
    garbage = decode_stream(b"\xff" * 40, "e2c")
    assert [r.kind for r in garbage] == ["error"]
    bad_version = decode_stream(bytes.fromhex("0a36cd12a13e") + b"02" + bytes(16), "e2c")
    assert [r.kind for r in bad_version] == ["error"]
    dec = StreamDecoder("e2c")
    assert dec.feed(b"\xff" * 8) and dec.feed(b"more") == [] and dec.close() == []
