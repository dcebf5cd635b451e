"""Sans-I/O Cap'n Proto RPC (a level-1 subset), usable as client and server at once.

Covers what cloudflared and its edge exchange: bootstrap, calls pipelined on the bootstrap
answer (promisedAnswer) and later on the imported capability, returns, finish, release and
abort. Anything else is answered ``Unimplemented``. Question ids are reused like go-capnp
does (lowest free id; a bootstrap question stays taken while its capability is held).

Every table a peer can grow is capped (:class:`RpcLimits`): a peer that leaves too many calls
unfinished or holds too many capability references gets an ``Abort`` saying which limit it hit,
and the session closes, so one connection cannot make us hold unbounded state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbtunnel.core import rpcmsg as m
from nbtunnel.core.capnp_read import StructReader, frame_length, read_message
from nbtunnel.core.errors import DecodeError, ProtocolError

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
BOOTSTRAP_EXPORT_ID = 0


@dataclass(frozen=True)
class RpcLimits:
    """Per-session caps. cloudflared and its edge keep one or two calls in flight per stream."""

    max_questions: int = 256  # our calls the peer has not answered (and finished)
    max_answers: int = 256  # the peer's calls we have not answered or it has not finished
    max_export_refs: int = 256  # references the peer holds to our capabilities


class RpcLimitError(ProtocolError):
    """The peer made a session table exceed its :class:`RpcLimits` cap."""


@dataclass
class BootstrapResolved:
    question_id: int
    import_id: int


@dataclass
class CallReturned:
    question_id: int
    results: StructReader | None = field(repr=False)


@dataclass
class CallRaised:
    question_id: int
    reason: str
    type: int = m.ExceptionType.FAILED


@dataclass
class IncomingCall:
    answer_id: int
    interface_id: int
    method_id: int
    params: StructReader | None = field(repr=False)


@dataclass
class Aborted:
    reason: str


RpcEvent = BootstrapResolved | CallReturned | CallRaised | IncomingCall | Aborted


@dataclass
class _Question:
    bootstrap: bool
    returned: bool = False
    finished: bool = False
    pinned: bool = False


@dataclass
class _Answer:
    bootstrap: bool
    returned: bool = False
    finished: bool = False


class RpcSession:
    """One RPC connection. ``interfaces``: ids our bootstrap capability serves (None: none)."""

    def __init__(self, *, interfaces: frozenset[int] | None = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 limits: RpcLimits | None = None) -> None:
        self.interfaces = interfaces
        self.max_message_size = max_message_size
        self.limits = limits or RpcLimits()
        self.closed = False
        self._in = bytearray()
        self._out: list[bytes] = []
        self._questions: dict[int, _Question] = {}
        self._answers: dict[int, _Answer] = {}
        self.imports: dict[int, int] = {}
        self.exports: dict[int, int] = {}

    # --- I/O ------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[RpcEvent]:
        """Feed bytes; returns events. Broken input raises DecodeError/ProtocolError after
        queueing an Abort, and the session is closed."""
        if self.closed:
            return []
        self._in.extend(data)
        events: list[RpcEvent] = []
        try:
            while not self.closed:
                n = frame_length(self._in, self.max_message_size)
                if n is None or n > len(self._in):
                    break
                reader, _ = read_message(self._in[:n], max_size=self.max_message_size)
                del self._in[:n]
                self._handle(m.decode_message(reader.root()), events)
        except ProtocolError as exc:
            self.abort(f"rpc: {exc}")
            raise
        return events

    # --- client side ----------------------------------------------------------------------

    def _new_question(self, bootstrap: bool) -> int:
        if len(self._questions) >= self.limits.max_questions:
            reason = (f"rpc: peer left {len(self._questions)} calls unanswered "
                      f"(limit {self.limits.max_questions})")
            self.abort(reason)
            raise RpcLimitError(reason)
        qid = 0
        while qid in self._questions:
            qid += 1
        self._questions[qid] = _Question(bootstrap, pinned=bootstrap)
        return qid

    def bootstrap(self) -> int:
        qid = self._new_question(True)
        self._out.append(m.encode_bootstrap(qid))
        return qid

    def call(self, target: m.Target, interface_id: int, method_id: int,
             write_params: m.ContentWriter | None) -> int:
        qid = self._new_question(False)
        self._out.append(m.encode_call(qid, target, interface_id, method_id, write_params))
        return qid

    def finish(self, question_id: int) -> None:
        q = self._questions.get(question_id)
        if q is None or q.finished:
            return
        q.finished = True
        self._out.append(m.encode_finish(question_id))
        self._maybe_forget_question(question_id)

    def release(self, import_id: int, count: int = 1) -> None:
        if self.imports.get(import_id, 0) <= 0:
            return
        self.imports[import_id] -= count
        if self.imports[import_id] <= 0:
            del self.imports[import_id]
        for qid, q in list(self._questions.items()):
            if q.bootstrap:
                q.pinned = False
                self._maybe_forget_question(qid)
        self._out.append(m.encode_release(import_id, count))

    def abort(self, reason: str, type_: int = m.ExceptionType.FAILED) -> None:
        if self.closed:
            return
        self.closed = True
        self._out.append(m.encode_abort(reason, type_))

    def _maybe_forget_question(self, qid: int) -> None:
        q = self._questions.get(qid)
        if q is not None and q.returned and q.finished and not q.pinned:
            del self._questions[qid]

    # --- server side ----------------------------------------------------------------------

    def _take_answer(self, answer_id: int) -> _Answer:
        a = self._answers.get(answer_id)
        if a is None or a.returned:
            raise ValueError(f"no pending call with answer id {answer_id}")
        a.returned = True
        if a.finished:
            del self._answers[answer_id]
        return a

    def return_results(self, answer_id: int, write_content: m.ContentWriter | None) -> None:
        self._take_answer(answer_id)
        if not self.closed:
            self._out.append(m.encode_return_results(answer_id, write_content))

    def return_exception(self, answer_id: int, reason: str,
                         type_: int = m.ExceptionType.FAILED) -> None:
        self._take_answer(answer_id)
        if not self.closed:
            self._out.append(m.encode_return_exception(answer_id, reason, type_))

    # --- incoming -------------------------------------------------------------------------

    def _handle(self, msg: m.RpcMessage, events: list[RpcEvent]) -> None:
        if isinstance(msg, m.Bootstrap):
            self._new_answer(msg.question_id, True)
            if self.interfaces is None:
                self.return_exception(msg.question_id, "no bootstrap capability")
                return
            refs = sum(self.exports.values())
            if refs >= self.limits.max_export_refs:
                raise RpcLimitError(f"peer holds {refs} capability references "
                                    f"(limit {self.limits.max_export_refs})")
            self.exports[BOOTSTRAP_EXPORT_ID] = self.exports.get(BOOTSTRAP_EXPORT_ID, 0) + 1
            self._answers[msg.question_id].returned = True
            self._out.append(m.encode_return_results(
                msg.question_id, lambda p: p.set_capability(0, 0), [BOOTSTRAP_EXPORT_ID]))
        elif isinstance(msg, m.Call):
            self._on_call(msg, events)
        elif isinstance(msg, m.Return):
            self._on_return(msg, events)
        elif isinstance(msg, m.Finish):
            a = self._answers.get(msg.question_id)
            if a is None or a.finished:
                raise ProtocolError(f"Finish for unknown question {msg.question_id}")
            a.finished = True
            if a.returned:
                del self._answers[msg.question_id]
        elif isinstance(msg, m.Release):
            have = self.exports.get(msg.id, 0)
            if have < msg.reference_count:
                raise ProtocolError(f"Release of unknown export {msg.id}")
            self.exports[msg.id] = have - msg.reference_count
        elif isinstance(msg, m.Abort):
            self.closed = True
            events.append(Aborted(msg.exception.reason))
        elif isinstance(msg, m.Unimplemented):
            orig = msg.original
            if isinstance(orig, m.Call | m.Bootstrap) and orig.question_id in self._questions:
                del self._questions[orig.question_id]
                events.append(CallRaised(orig.question_id, "unimplemented",
                                         m.ExceptionType.UNIMPLEMENTED))
        else:
            self._out.append(m.encode_unimplemented(msg.root))

    def _new_answer(self, answer_id: int, bootstrap: bool) -> None:
        if answer_id in self._answers:
            raise ProtocolError(f"question id {answer_id} already in use")
        if len(self._answers) >= self.limits.max_answers:
            raise RpcLimitError(f"peer has {len(self._answers)} calls outstanding "
                                f"(limit {self.limits.max_answers}); send Finish")
        self._answers[answer_id] = _Answer(bootstrap)

    def _on_call(self, call: m.Call, events: list[RpcEvent]) -> None:
        self._new_answer(call.question_id, False)
        target = call.target
        if isinstance(target, m.ImportedCap):
            valid = self.exports.get(target.import_id, 0) > 0
        else:
            a = self._answers.get(target.question_id)
            valid = a is not None and a.bootstrap and not target.transform
        if not valid or self.interfaces is None:
            self.return_exception(call.question_id, "rpc: call on an unknown capability")
        elif call.interface_id not in self.interfaces:
            self.return_exception(call.question_id, "unimplemented",
                                  m.ExceptionType.UNIMPLEMENTED)
        else:
            events.append(IncomingCall(call.question_id, call.interface_id, call.method_id,
                                       call.params))

    def _on_return(self, ret: m.Return, events: list[RpcEvent]) -> None:
        q = self._questions.get(ret.answer_id)
        if q is None or q.returned:
            raise ProtocolError(f"Return for unknown question {ret.answer_id}")
        q.returned = True
        if ret.which == "exception" and ret.exception is not None:
            events.append(CallRaised(ret.answer_id, ret.exception.reason, ret.exception.type))
        elif ret.which != "results":
            events.append(CallRaised(ret.answer_id, f"unsupported return kind {ret.which}"))
        elif q.bootstrap:
            cap = ret.content_cap
            if cap is None or cap >= len(ret.cap_table):
                raise DecodeError("bootstrap Return without a capability")
            desc = ret.cap_table[cap]
            if desc.kind not in ("senderHosted", "senderPromise"):
                raise ProtocolError(f"bootstrap capability is {desc.kind}")
            self.imports[desc.id] = self.imports.get(desc.id, 0) + 1
            events.append(BootstrapResolved(ret.answer_id, desc.id))
        else:
            events.append(CallReturned(ret.answer_id, ret.content))
        if not q.finished:
            self.finish(ret.answer_id)
        self._maybe_forget_question(ret.answer_id)

    def bootstrap_import(self) -> int | None:
        """Import id of the peer's bootstrap capability once its Return arrived."""
        return next(iter(self.imports), None)
