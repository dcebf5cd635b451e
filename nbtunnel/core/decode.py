"""Human-readable decoder for captured stream bytes (used by the lab and by tests).

Detects the stream kind from its first bytes: a data stream (preamble + ConnectRequest or
ConnectResponse, then body), an RPC stream (signature + RPC) or the control stream (raw
RPC). Never raises on garbage: it emits a kind "error" record and stops.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from nbtunnel.core import rpcmsg as m
from nbtunnel.core import schema as s
from nbtunnel.core.capnp_read import StructReader, frame_length, read_message
from nbtunnel.core.errors import DecodeError, NbtunnelError
from nbtunnel.core.streams import (
    DATA_SIGNATURE,
    PROTOCOL_VERSION,
    RPC_SIGNATURE,
    decode_connect_request,
    decode_connect_response,
)

Direction = Literal["c2e", "e2c"]
MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_IFACES = {
    s.REGISTRATION_SERVER_ID: ("RegistrationServer",
                               ("registerConnection", "unregisterConnection",
                                "updateLocalConfiguration")),
    s.SESSION_MANAGER_ID: ("SessionManager", ("registerUdpSession", "unregisterUdpSession")),
    s.CONFIGURATION_MANAGER_ID: ("ConfigurationManager", ("updateConfiguration",)),
}


@dataclass
class DecodedMessage:
    offset: int
    length: int
    plane: Literal["control", "data"]
    kind: str
    summary: str
    fields: dict[str, object] = field(default_factory=dict)


def _uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw)) if len(raw) == 16 else raw.hex()


def _target(t: m.Target) -> str:
    if isinstance(t, m.ImportedCap):
        return f"importedCap({t.import_id})"
    return f"promisedAnswer(q{t.question_id}, transform={list(t.transform)})"


class StreamDecoder:
    """Incremental decoder of one direction of one stream."""

    def __init__(self, direction: Direction, *, redact_secrets: bool = True) -> None:
        if direction not in ("c2e", "e2c"):
            raise ValueError("direction must be 'c2e' or 'e2c'")
        self.direction = direction
        self.redact_secrets = redact_secrets
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._state = "detect"

    def feed(self, data: bytes) -> list[DecodedMessage]:
        if self._state == "error":
            return []
        self._buf.extend(data)
        out: list[DecodedMessage] = []
        try:
            self._step(out)
        except NbtunnelError as exc:
            self._fail(out, str(exc))
        return out

    def close(self) -> list[DecodedMessage]:
        """Flush: leftover bytes of an unfinished message become an "error" record."""
        out: list[DecodedMessage] = []
        if self._state != "error" and self._buf:
            self._fail(out, f"truncated: {len(self._buf)} bytes left in state {self._state}")
        return out

    def _fail(self, out: list[DecodedMessage], reason: str) -> None:
        plane: Literal["control", "data"] = "data" if self._state in ("head", "body") else "control"
        out.append(DecodedMessage(self._offset, len(self._buf), plane, "error", reason,
                                  {"error": reason}))
        self._state = "error"
        self._buf.clear()

    def _take(self, n: int) -> tuple[int, bytes]:
        start = self._offset
        raw = bytes(self._buf[:n])
        del self._buf[:n]
        self._offset += n
        return start, raw

    def _step(self, out: list[DecodedMessage]) -> None:
        if self._state == "detect":
            head = bytes(self._buf[:8])
            for sig in (DATA_SIGNATURE, RPC_SIGNATURE):
                if len(head) < 6 and sig.startswith(head):
                    return
            if head.startswith(RPC_SIGNATURE):
                off, _ = self._take(6)
                out.append(DecodedMessage(off, 6, "control", "rpc-signature", "RPC stream"))
                self._state = "rpc"
            elif head.startswith(DATA_SIGNATURE):
                if len(head) < 8:
                    return
                if head[6:8] != PROTOCOL_VERSION:
                    raise DecodeError(f"unsupported data stream version {head[6:8]!r}")
                off, _ = self._take(8)
                out.append(DecodedMessage(off, 8, "data", "preamble",
                                          'data stream signature + version "01"'))
                self._state = "head"
            else:
                self._state = "rpc"
        while self._state in ("rpc", "head"):
            n = frame_length(self._buf, MAX_MESSAGE_SIZE)
            if n is None or n > len(self._buf):
                return
            reader, _ = read_message(self._buf[:n])
            root = reader.root()
            if self._state == "rpc":
                rec = self._rpc(root)
            else:
                rec = self._head(root)
                self._state = "body"
            off, _ = self._take(n)
            rec.offset, rec.length = off, n
            out.append(rec)
        if self._state == "body" and self._buf:
            off, raw = self._take(len(self._buf))
            out.append(DecodedMessage(off, len(raw), "data", "body", f"body {len(raw)} bytes",
                                      {"bytes": len(raw)}))

    def _head(self, root: StructReader) -> DecodedMessage:
        if self.direction == "e2c":
            req = decode_connect_request(root)
            meta = dict(req.metadata)
            n = sum(1 for k, _ in req.metadata if k.startswith("HttpHeader:"))
            method = meta.get("HttpMethod")
            what = f"{method} {req.dest}" if method else req.dest
            summary = f"ConnectRequest {req.type.name.lower()} {what} ({n} headers)"
            return DecodedMessage(0, 0, "data", "ConnectRequest", summary, {
                "dest": req.dest, "type": req.type.name.lower(), "metadata": req.metadata})
        resp = decode_connect_response(root)
        meta = dict(resp.metadata)
        n = sum(1 for k, _ in resp.metadata if k.startswith("HttpHeader:"))
        if resp.error:
            summary = f"ConnectResponse error {resp.error!r}"
        else:
            summary = f"ConnectResponse {meta.get('HttpStatus', '(no status)')} ({n} headers)"
        return DecodedMessage(0, 0, "data", "ConnectResponse", summary,
                              {"error": resp.error, "metadata": resp.metadata})

    def _rpc(self, root: StructReader) -> DecodedMessage:
        msg = m.decode_message(root)
        f: dict[str, object] = {}
        if isinstance(msg, m.Bootstrap):
            return DecodedMessage(0, 0, "control", "bootstrap", f"Bootstrap q{msg.question_id}",
                                  {"question_id": msg.question_id})
        if isinstance(msg, m.Call):
            f = {"question_id": msg.question_id, "target": _target(msg.target),
                 "interface_id": msg.interface_id, "method_id": msg.method_id}
            return DecodedMessage(0, 0, "control", "call", self._call(msg, f), f)
        if isinstance(msg, m.Return):
            f = {"answer_id": msg.answer_id, "release_param_caps": msg.release_param_caps,
                 "which": msg.which}
            return DecodedMessage(0, 0, "control", "return",
                                  f"Return q{msg.answer_id} {self._return(msg, f)}", f)
        if isinstance(msg, m.Finish):
            f = {"question_id": msg.question_id, "release_result_caps": msg.release_result_caps,
                 "require_early_cancellation_workaround":
                     msg.require_early_cancellation_workaround}
            return DecodedMessage(0, 0, "control", "finish", f"Finish q{msg.question_id}", f)
        if isinstance(msg, m.Release):
            f = {"id": msg.id, "reference_count": msg.reference_count}
            return DecodedMessage(0, 0, "control", "release",
                                  f"Release import {msg.id} x{msg.reference_count}", f)
        if isinstance(msg, m.Abort):
            exc = msg.exception
            f = {"reason": exc.reason, "type": exc.type}
            return DecodedMessage(0, 0, "control", "abort", f"Abort {exc.reason!r}", f)
        if isinstance(msg, m.Unimplemented):
            inner = type(msg.original).__name__ if msg.original else "?"
            return DecodedMessage(0, 0, "control", "unimplemented", f"Unimplemented ({inner})")
        kind = m.MESSAGE_KINDS.get(msg.which, f"unknown({msg.which})")
        return DecodedMessage(0, 0, "control", kind, f"RPC {kind} (not decoded)")

    def _call(self, call: m.Call, f: dict[str, object]) -> str:
        iface, methods = _IFACES.get(call.interface_id, (hex(call.interface_id), ()))
        mid = call.method_id
        name = methods[mid] if mid < len(methods) else f"method{mid}"
        f["method"] = f"{iface}.{name}"
        p = call.params
        if name == "registerConnection" and p is not None:
            r = s.read_register_params(p)
            c = r.options.client
            secret = r.auth.tunnel_secret
            shown = (f"<redacted {len(secret)} bytes>" if self.redact_secrets else secret.hex())
            f.update(account_tag=r.auth.account_tag, secret=shown, tunnel_id=_uuid(r.tunnel_id),
                     conn_index=r.conn_index, client_id=_uuid(c.client_id), features=c.features,
                     version=c.version, arch=c.arch,
                     origin_local_ip=r.options.origin_local_ip.hex(),
                     replace_existing=r.options.replace_existing,
                     num_previous_attempts=r.options.num_previous_attempts)
            return (f"registerConnection tunnelId={_uuid(r.tunnel_id)} connIndex={r.conn_index} "
                    f"client={c.version} {c.arch} features={c.features} secret={shown}")
        if name in ("updateLocalConfiguration", "updateConfiguration") and p is not None:
            version, config = (s.read_update_configuration_params(p)
                               if name == "updateConfiguration" else (None, p.data(0)))
            f["config"] = config.decode("utf-8", "replace")
            if version is not None:
                f["version"] = version
                return f"updateConfiguration version={version} config=<{len(config)} bytes>"
            return f"updateLocalConfiguration config=<{len(config)} bytes>"
        return f"{name} q{call.question_id} on {_target(call.target)}"

    def _return(self, ret: m.Return, f: dict[str, object]) -> str:
        if ret.which == "exception" and ret.exception is not None:
            f["reason"] = ret.exception.reason
            return f"exception {ret.exception.reason!r}"
        if ret.which != "results":
            return ret.which
        if ret.content_cap is not None:
            caps = [f"{c.kind}({c.id})" for c in ret.cap_table]
            f["cap_table"] = caps
            return f"capability {', '.join(caps)}"
        inner = ret.content.struct(0) if ret.content is not None else None
        if inner is None:
            return "(empty)"
        try:
            if self.direction == "e2c":
                resp = s.read_register_results(ret.content)
                if isinstance(resp, s.ConnectionDetails):
                    f.update(uuid=_uuid(resp.uuid), location=resp.location_name,
                             remotely_managed=resp.tunnel_is_remotely_managed)
                    where = resp.location_name
                    return f"connectionDetails uuid={_uuid(resp.uuid)} location={where}"
                f.update(cause=resp.cause, should_retry=resp.should_retry)
                return f"connectionError cause={resp.cause!r} shouldRetry={resp.should_retry}"
            if inner.data_bytes:
                version, err = s.read_update_configuration_results(ret.content)
                f.update(latest_applied_version=version, err=err)
                return f"latestAppliedVersion={version} err={err!r}"
            f["err"] = inner.text(0)
            return f"registerUdpSession err={inner.text(0)!r}"
        except DecodeError:
            return "results (not decoded)"


def decode_stream(data: bytes, direction: Direction, *,
                  redact_secrets: bool = True) -> list[DecodedMessage]:
    """Decode a whole captured stream direction at once."""
    dec = StreamDecoder(direction, redact_secrets=redact_secrets)
    return dec.feed(data) + dec.close()
