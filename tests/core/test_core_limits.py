"""Work and state bounds of the core decoders against hostile input (issue 9).

Assertions are on work done (words charged to the traversal budget, objects built), never on
wall time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nbtunnel.core import capnp_read, rpc
from nbtunnel.core import streams as streams_mod
from nbtunnel.core.capnp_read import (
    TRAVERSAL_FLOOR_WORDS,
    TRAVERSAL_WORDS_PER_WORD,
    MessageReader,
    read_message,
    traversal_limit,
)
from nbtunnel.core.decode import decode_stream
from nbtunnel.core.errors import DecodeError
from nbtunnel.core.registration import RegistrationServer
from nbtunnel.core.streams import (
    ConnectionType,
    ConnectRequest,
    HeadParser,
    encode_connect_request,
)
from tests.hostile_capnp import (
    ZERO_SIZE_ELEMENTS,
    connect_response_with_zero_size_metadata,
    rpc_call_with_zero_size_cap_table,
)


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MessageReader]]:
    """Every MessageReader the RPC session and the head parser create."""
    seen: list[MessageReader] = []
    real = capnp_read.read_message

    def spy(*args: object, **kwargs: object) -> tuple[MessageReader, int]:
        reader, n = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(reader)
        return reader, n

    monkeypatch.setattr(rpc, "read_message", spy)
    monkeypatch.setattr(streams_mod, "read_message", spy)
    yield seen


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts StructReader objects built for list elements."""
    count = [0]
    real = capnp_read.list_structs

    def spy(msg: MessageReader, info: capnp_read.ListInfo,
            depth: int) -> list[capnp_read.StructReader]:
        out = real(msg, info, depth)
        count[0] += len(out)
        return out

    monkeypatch.setattr(capnp_read, "list_structs", spy)
    yield count


def test_budget_is_proportional_to_message_size() -> None:
    assert traversal_limit(1) == TRAVERSAL_FLOOR_WORDS
    assert traversal_limit(100_000) == TRAVERSAL_WORDS_PER_WORD * 100_000
    assert traversal_limit(100_000, 5000) == 5000


def test_zero_size_cap_table_on_stream_0_is_refused_before_any_element_is_built(
    readers: list[MessageReader], built: list[int]
) -> None:
    raw = rpc_call_with_zero_size_cap_table()
    assert len(raw) == 120
    server = RegistrationServer()
    with pytest.raises(DecodeError, match="traversal limit"):
        server.receive_data(raw)
    (reader,) = readers
    assert reader.limit == TRAVERSAL_FLOOR_WORDS  # 15 words of input: the floor
    assert reader.traversed <= reader.limit
    assert built[0] == 0
    assert server.closed
    assert b"traversal limit" in server.data_to_send()  # the Abort tells the peer why


def test_zero_size_metadata_in_a_connect_response_is_refused(
    readers: list[MessageReader], built: list[int]
) -> None:
    raw = connect_response_with_zero_size_metadata()
    assert len(raw) == 48
    with pytest.raises(DecodeError, match="traversal limit"):
        HeadParser("response").feed(raw)
    (reader,) = readers
    assert reader.traversed <= TRAVERSAL_FLOOR_WORDS
    assert built[0] == 0


@pytest.mark.parametrize("n", [TRAVERSAL_FLOOR_WORDS // 2, ZERO_SIZE_ELEMENTS])
def test_objects_built_never_exceed_the_budget(n: int, built: list[int]) -> None:
    """Small zero-size lists may be read (within the floor); none beyond the budget."""
    raw = connect_response_with_zero_size_metadata(n)
    try:
        head = HeadParser("response").feed(raw)
    except DecodeError:
        assert n > TRAVERSAL_FLOOR_WORDS
    else:
        assert head is not None and len(head.metadata) == n  # type: ignore[union-attr]
    assert built[0] <= TRAVERSAL_FLOOR_WORDS


def test_stream_decoder_reports_the_refusal() -> None:
    records = decode_stream(rpc_call_with_zero_size_cap_table() * 3, "c2e")
    assert [r.kind for r in records] == ["error"]
    assert "traversal limit" in records[0].summary


def test_large_legitimate_message_fits_its_budget() -> None:
    """The budget grows with the message: 3,000 headers decode, and reading twice is fine."""
    meta = [(f"HttpHeader:X-{i}", "v" * 20) for i in range(3000)]
    raw = encode_connect_request(ConnectRequest("http://x/", ConnectionType.HTTP, meta))
    reader, _ = read_message(raw[8:], max_size=len(raw))
    assert reader.limit > 3000 * 3
    first = [(e.text(0), e.text(1)) for e in reader.root().structs(1)]
    again = [(e.text(0), e.text(1)) for e in reader.root().structs(1)]
    assert first == again == meta
    assert reader.traversed < reader.limit


def test_byte_list_read_as_structs_is_charged_per_element(built: list[int]) -> None:
    """An upgraded primitive list builds one object per byte: charged per element too."""
    from tests.hostile_capnp import frame, list_ptr, struct_ptr

    count = 8 * 300  # 300 words of bytes; the budget of this message is the floor
    raw = frame([struct_ptr(0, 0, 1), list_ptr(0, 2, count), *([0] * 300)])
    reader, _ = read_message(raw)
    reader.charge(reader.limit - count + 1)
    with pytest.raises(DecodeError, match="traversal limit"):
        reader.root().structs(0)
    assert built[0] == 0


# --- RPC tables: questions, answers, exports -------------------------------------------------

def _finish(question_id: int) -> bytes:
    from nbtunnel.core.rpcmsg import encode_finish
    return encode_finish(question_id)


def test_unfinished_calls_are_capped_with_an_abort() -> None:
    from nbtunnel.core.rpc import RpcLimitError, RpcLimits
    from nbtunnel.core.rpcmsg import encode_bootstrap

    server = RegistrationServer()
    cap = RpcLimits().max_answers
    server.receive_data(b"".join(encode_bootstrap(q) for q in range(cap)))
    assert not server.closed
    server.data_to_send()
    with pytest.raises(RpcLimitError, match=f"calls outstanding \\(limit {cap}\\)"):
        server.receive_data(encode_bootstrap(cap))
    assert server.closed
    assert b"calls outstanding" in server.data_to_send()  # Abort with the reason


def test_finished_calls_free_their_slot_but_capability_references_are_capped() -> None:
    from nbtunnel.core.rpc import RpcLimitError, RpcLimits
    from nbtunnel.core.rpcmsg import encode_bootstrap

    server = RegistrationServer()
    refs = RpcLimits().max_export_refs
    accepted = 0
    with pytest.raises(RpcLimitError, match=f"capability references \\(limit {refs}\\)"):
        while accepted <= refs:
            server.receive_data(encode_bootstrap(0) + _finish(0))  # same id, reused
            server.data_to_send()
            accepted += 1
    assert server.closed
    assert accepted == refs


def test_questions_the_peer_never_answers_are_capped() -> None:
    from nbtunnel.core.registration import ConfigurationClient
    from nbtunnel.core.rpc import RpcLimitError, RpcLimits

    client = ConfigurationClient()
    cap = RpcLimits().max_questions
    with pytest.raises(RpcLimitError, match="calls unanswered"):
        for version in range(cap + 1):
            client.update_configuration(version, b"{}")  # the peer never answers
    assert client.closed
    assert b"calls unanswered" in client.data_to_send()
