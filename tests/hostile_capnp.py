"""Hand-made hostile Cap'n Proto messages: tiny on the wire, huge if decoded naively."""

from __future__ import annotations

from nbtunnel.core.schema import REGISTRATION_SERVER_ID
from nbtunnel.core.streams import PREAMBLE

ZERO_SIZE_ELEMENTS = 8_000_000  # just under the old fixed 8 M-word traversal budget


def struct_ptr(offset: int, data_words: int, ptr_count: int) -> int:
    return ((offset & 0x3FFFFFFF) << 2) | (data_words << 32) | (ptr_count << 48)


def list_ptr(offset: int, size: int, count: int) -> int:
    return 1 | ((offset & 0x3FFFFFFF) << 2) | (size << 32) | (count << 35)


def frame(words: list[int]) -> bytes:
    """One single-segment framed message."""
    return (0).to_bytes(4, "little") + len(words).to_bytes(4, "little") + b"".join(
        w.to_bytes(8, "little") for w in words)


def zero_size_list(n: int) -> list[int]:
    """A composite list pointer (at offset 0) and its tag: ``n`` elements, zero words."""
    return [list_ptr(0, 7, 0), struct_ptr(n, 0, 0)]


def rpc_call_with_zero_size_cap_table(n: int = ZERO_SIZE_ELEMENTS,
                                      question_id: int = 0) -> bytes:
    """A 120-byte RPC Call to RegistrationServer whose params cap table declares ``n``
    zero-size elements (issue 9, finding 1)."""
    return frame([
        struct_ptr(0, 1, 1),                   # 0 root -> Message
        2,                                     # 1 Message.which = call
        struct_ptr(0, 3, 3),                   # 2 -> Call
        question_id,                           # 3 questionId, methodId 0
        REGISTRATION_SERVER_ID,                # 4 interfaceId
        0,                                     # 5
        struct_ptr(2, 1, 1),                   # 6 target -> MessageTarget (importedCap 0)
        struct_ptr(3, 0, 2),                   # 7 params -> Payload
        0,                                     # 8
        0,                                     # 9 MessageTarget.importedCap = 0
        0,                                     # 10
        0,                                     # 11 Payload.content: null
        *zero_size_list(n),                    # 12, 13 Payload.capTable
    ])


def connect_response_with_zero_size_metadata(n: int = ZERO_SIZE_ELEMENTS) -> bytes:
    """Preamble + a 40-byte ConnectResponse whose metadata declares ``n`` zero-size
    entries: 48 bytes a connector can send on any data stream."""
    return PREAMBLE + frame([
        struct_ptr(0, 0, 2),                   # root -> ConnectResponse
        0,                                     # error: null
        *zero_size_list(n),                    # metadata
    ])
