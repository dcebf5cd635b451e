"""Cap'n Proto RPC ``Message`` envelope (rpc.capnp) as dataclasses, decode and encode.

Encoders write go-capnp's layouts (what cloudflared and its edge exchange): Exception with
one pointer, ``releaseParamCaps = false``, composite cap tables with a tag word even when
empty, and empty params as a zero-sized struct pointer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from nbtunnel.core.capnp_read import StructReader
from nbtunnel.core.capnp_write import MessageBuilder, StructBuilder
from nbtunnel.core.errors import DecodeError

# Message union discriminants
UNIMPLEMENTED, ABORT, CALL, RETURN, FINISH, RESOLVE, RELEASE = 0, 1, 2, 3, 4, 5, 6
BOOTSTRAP = 8
MESSAGE_KINDS = {
    0: "unimplemented", 1: "abort", 2: "call", 3: "return", 4: "finish", 5: "resolve",
    6: "release", 7: "obsoleteSave", 8: "bootstrap", 9: "obsoleteDelete", 10: "provide",
    11: "accept", 12: "join", 13: "disembargo",
}
RETURN_KINDS = ("results", "exception", "canceled", "resultsSentElsewhere",
                "takeFromOtherQuestion", "acceptFromThirdParty")
CAP_KINDS = ("none", "senderHosted", "senderPromise", "receiverHosted", "receiverAnswer",
             "thirdPartyHosted")


class ExceptionType(IntEnum):
    FAILED = 0
    OVERLOADED = 1
    DISCONNECTED = 2
    UNIMPLEMENTED = 3


@dataclass(frozen=True)
class ImportedCap:
    import_id: int


@dataclass(frozen=True)
class PromisedAnswer:
    question_id: int
    transform: tuple[int, ...] = ()  # getPointerField indices; noop ops are dropped


Target = ImportedCap | PromisedAnswer


@dataclass(frozen=True)
class CapDescriptor:
    kind: str
    id: int = 0  # export/import id for senderHosted, senderPromise, receiverHosted


@dataclass
class RpcException:
    reason: str
    type: int = ExceptionType.FAILED


@dataclass
class Bootstrap:
    question_id: int


@dataclass
class Call:
    question_id: int
    target: Target
    interface_id: int
    method_id: int
    params: StructReader | None = field(repr=False)
    cap_table: list[CapDescriptor]
    send_results_to: int = 0


@dataclass
class Return:
    answer_id: int
    release_param_caps: bool
    which: str
    content: StructReader | None = field(repr=False)  # results content as a struct
    content_cap: int | None  # results content as a capability (cap-table index)
    cap_table: list[CapDescriptor]
    exception: RpcException | None = None


@dataclass
class Finish:
    question_id: int
    release_result_caps: bool = False
    require_early_cancellation_workaround: bool = True


@dataclass
class Release:
    id: int
    reference_count: int


@dataclass
class Abort:
    exception: RpcException


@dataclass
class Unimplemented:
    original: RpcMessage | None  # the message the peer did not understand


@dataclass
class Other:
    """A message kind this minimal implementation does not handle (answered Unimplemented)."""

    which: int
    root: StructReader = field(repr=False)


RpcMessage = Bootstrap | Call | Return | Finish | Release | Abort | Unimplemented | Other


def _exception(s: StructReader | None) -> RpcException:
    if s is None:
        return RpcException("(no exception)")
    return RpcException(s.text(0), s.u16(2))


def _cap_table(payload: StructReader) -> list[CapDescriptor]:
    out = []
    for c in payload.structs(1):
        which = c.u16(0)
        kind = CAP_KINDS[which] if which < len(CAP_KINDS) else f"unknown({which})"
        out.append(CapDescriptor(kind, c.u32(1)))
    return out


def _target(s: StructReader | None) -> Target:
    if s is None:
        raise DecodeError("call without target")
    which = s.u16(2)
    if which == 0:
        return ImportedCap(s.u32(0))
    if which == 1:
        pa = s.struct(0)
        if pa is None:
            raise DecodeError("promisedAnswer target without PromisedAnswer")
        ops = tuple(op.u16(1) for op in pa.structs(0) if op.u16(0) == 1)
        return PromisedAnswer(pa.u32(0), ops)
    raise DecodeError(f"unknown MessageTarget variant {which}")


def decode_message(root: StructReader, *, nested: bool = False) -> RpcMessage:
    """Decode one RPC Message struct (the root of one framed message)."""
    which = root.u16(0)
    if which == BOOTSTRAP:
        return Bootstrap(_need(root).u32(0))
    if which == CALL:
        c = _need(root)
        payload = c.struct(1)
        params = None
        call_caps: list[CapDescriptor] = []
        if payload is not None:
            params = payload.struct(0) if payload.capability(0) is None else None
            call_caps = _cap_table(payload)
        return Call(c.u32(0), _target(c.struct(0)), c.u64(1), c.u16(2), params, call_caps,
                    c.u16(3))
    if which == RETURN:
        r = _need(root)
        kind_no = r.u16(3)
        kind = RETURN_KINDS[kind_no] if kind_no < len(RETURN_KINDS) else f"unknown({kind_no})"
        content: StructReader | None = None
        cap: int | None = None
        caps: list[CapDescriptor] = []
        exc = None
        if kind == "results":
            payload = r.struct(0)
            if payload is not None:
                cap = payload.capability(0)
                content = payload.struct(0) if cap is None else None
                caps = _cap_table(payload)
        elif kind == "exception":
            exc = _exception(r.struct(0))
        return Return(r.u32(0), r.bit(32, True), kind, content, cap, caps, exc)
    if which == FINISH:
        f = _need(root)
        return Finish(f.u32(0), f.bit(32, True), f.bit(33, True))
    if which == RELEASE:
        rel = _need(root)
        return Release(rel.u32(0), rel.u32(1))
    if which == ABORT:
        return Abort(_exception(root.struct(0)))
    if which == UNIMPLEMENTED:
        inner = root.struct(0)
        if nested or inner is None:
            return Unimplemented(None)
        return Unimplemented(decode_message(inner, nested=True))
    return Other(which, root)


def _need(root: StructReader) -> StructReader:
    s = root.struct(0)
    if s is None:
        raise DecodeError(f"{MESSAGE_KINDS.get(root.u16(0), 'message')} without a body")
    return s


# --- encoders ----------------------------------------------------------------------------

ContentWriter = Callable[[StructBuilder], None]


def _message(which: int) -> tuple[MessageBuilder, StructBuilder]:
    mb = MessageBuilder()
    root = mb.init_root(1, 1)
    root.set_u16(0, which)
    return mb, root


def encode_bootstrap(question_id: int) -> bytes:
    mb, root = _message(BOOTSTRAP)
    root.init_struct(0, 1, 1).set_u32(0, question_id)
    return mb.to_bytes()


def encode_call(question_id: int, target: Target, interface_id: int, method_id: int,
                write_params: ContentWriter | None) -> bytes:
    """Call; ``write_params`` receives the Payload and inits pointer 0 (None: empty struct)."""
    mb, root = _message(CALL)
    c = root.init_struct(0, 3, 3)
    c.set_u32(0, question_id)
    c.set_u64(1, interface_id)
    c.set_u16(2, method_id)
    t = c.init_struct(0, 1, 1)
    if isinstance(target, ImportedCap):
        t.set_u32(0, target.import_id)
    else:
        t.set_u16(2, 1)
        pa = t.init_struct(0, 1, 1)
        pa.set_u32(0, target.question_id)
        for op, index in zip(pa.init_struct_list(0, len(target.transform), 1, 0),
                             target.transform, strict=True):
            op.set_u16(0, 1)
            op.set_u16(1, index)
    payload = c.init_struct(1, 0, 2)
    if write_params is None:
        payload.set_empty_struct(0)
    else:
        write_params(payload)
    payload.init_struct_list(1, 0, 1, 1)
    return mb.to_bytes()


def encode_return_results(answer_id: int, write_content: ContentWriter | None,
                          exports: list[int] | None = None, *,
                          release_param_caps: bool = False) -> bytes:
    """Return with results; ``exports`` become senderHosted cap-table entries."""
    mb, root = _message(RETURN)
    r = root.init_struct(0, 2, 1)
    r.set_u32(0, answer_id)
    r.set_bool(32, release_param_caps, True)
    payload = r.init_struct(0, 0, 2)
    if write_content is None:
        payload.set_empty_struct(0)
    else:
        write_content(payload)
    caps = payload.init_struct_list(1, len(exports or []), 1, 1)
    for cap, export_id in zip(caps, exports or [], strict=True):
        cap.set_u16(0, 1)
        cap.set_u32(1, export_id)
    return mb.to_bytes()


def _write_exception(s: StructBuilder, reason: str, type_: int) -> None:
    s.set_u16(2, type_)
    s.set_text(0, reason)


def encode_return_exception(answer_id: int, reason: str, type_: int = ExceptionType.FAILED,
                            *, release_param_caps: bool = False) -> bytes:
    mb, root = _message(RETURN)
    r = root.init_struct(0, 2, 1)
    r.set_u32(0, answer_id)
    r.set_bool(32, release_param_caps, True)
    r.set_u16(3, 1)
    _write_exception(r.init_struct(0, 1, 1), reason, type_)
    return mb.to_bytes()


def encode_finish(question_id: int, *, release_result_caps: bool = False,
                  require_early_cancellation_workaround: bool = True) -> bytes:
    mb, root = _message(FINISH)
    f = root.init_struct(0, 1, 0)
    f.set_u32(0, question_id)
    f.set_bool(32, release_result_caps, True)
    f.set_bool(33, require_early_cancellation_workaround, True)
    return mb.to_bytes()


def encode_release(import_id: int, reference_count: int) -> bytes:
    mb, root = _message(RELEASE)
    r = root.init_struct(0, 1, 0)
    r.set_u32(0, import_id)
    r.set_u32(1, reference_count)
    return mb.to_bytes()


def encode_abort(reason: str, type_: int = ExceptionType.FAILED) -> bytes:
    mb, root = _message(ABORT)
    _write_exception(root.init_struct(0, 1, 1), reason, type_)
    return mb.to_bytes()


def encode_unimplemented(original_root: StructReader) -> bytes:
    """Echo a message we do not understand inside ``Message.unimplemented``."""
    mb, root = _message(UNIMPLEMENTED)
    data_words = (original_root.data_bytes + 7) // 8
    copy = root.init_struct(0, data_words, original_root.ptr_count)
    raw = original_root.msg.segments[original_root.seg][
        original_root.data_start : original_root.data_start + original_root.data_bytes]
    mb.buf[copy.data_index * 8 : copy.data_index * 8 + len(raw)] = raw
    for k in range(original_root.ptr_count):
        copy.copy_from(k, original_root, k)
    return mb.to_bytes()
