"""Role wrappers over :class:`RpcSession` for the four RPC conversations of a tunnel.

* control stream 0: :class:`RegistrationClient` (connector) <-> :class:`RegistrationServer` (edge)
* edge-opened RPC stream: :class:`ConfigurationClient` (edge) <-> :class:`CloudflaredServer`
  (connector)

Each wrapper turns RPC events into typed events; the caller moves bytes with
``receive_data`` / ``data_to_send``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbtunnel.core import schema as s
from nbtunnel.core.errors import DecodeError
from nbtunnel.core.rpc import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Aborted,
    BootstrapResolved,
    CallRaised,
    CallReturned,
    IncomingCall,
    RpcEvent,
    RpcSession,
)
from nbtunnel.core.rpcmsg import ContentWriter, ExceptionType, ImportedCap, PromisedAnswer, Target


@dataclass
class RegistrationResult:
    response: s.ConnectionResponse


@dataclass
class UnregisterCompleted:
    pass


@dataclass
class LocalConfigurationAcked:
    pass


@dataclass
class CallFailed:
    reason: str


@dataclass
class PeerAborted:
    reason: str


@dataclass
class RegisterRequested:
    question_id: int
    params: s.RegisterConnectionParams


@dataclass
class UnregisterRequested:
    question_id: int


@dataclass
class LocalConfigurationReceived:
    question_id: int
    config: bytes


@dataclass
class ConfigurationUpdated:
    latest_applied_version: int
    error: str


@dataclass
class UpdateConfigurationRequested:
    question_id: int
    version: int
    config: bytes


class _Role:
    """Shared plumbing: byte I/O and the bootstrap target (promise first, import later)."""

    def __init__(self, session: RpcSession) -> None:
        self.session = session
        self._bootstrap_q: int | None = None
        self._pending: dict[int, str] = {}

    def data_to_send(self) -> bytes:
        return self.session.data_to_send()

    @property
    def closed(self) -> bool:
        return self.session.closed

    def _target(self) -> Target:
        imported = self.session.bootstrap_import()
        if imported is not None:
            return ImportedCap(imported)
        if self._bootstrap_q is None:
            self._bootstrap_q = self.session.bootstrap()
        return PromisedAnswer(self._bootstrap_q)

    def _call(self, kind: str, iface: int, method: int,
              write: ContentWriter | None) -> int:
        qid = self.session.call(self._target(), iface, method, write)
        self._pending[qid] = kind
        return qid

    def _client_event(self, ev: RpcEvent) -> list[object]:
        """Map client-side RPC events; subclasses decode results by call kind."""
        if isinstance(ev, Aborted):
            return [PeerAborted(ev.reason)]
        if isinstance(ev, BootstrapResolved):
            return []
        if isinstance(ev, CallRaised):
            if ev.question_id == self._bootstrap_q:
                return [CallFailed(f"bootstrap failed: {ev.reason}")]
            self._pending.pop(ev.question_id, None)
            return [CallFailed(ev.reason)]
        if isinstance(ev, CallReturned):
            kind = self._pending.pop(ev.question_id, "")
            try:
                return self._result(kind, ev)
            except DecodeError as exc:
                return [CallFailed(f"malformed {kind} results: {exc}")]
        return []

    def _result(self, kind: str, ev: CallReturned) -> list[object]:
        return []


class RegistrationClient(_Role):
    """Connector side of the control stream (raw RPC, no preamble)."""

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        super().__init__(RpcSession(max_message_size=max_message_size))

    def register(self, params: s.RegisterConnectionParams) -> None:
        """Bootstrap q0, pipelined registerConnection on it, then Finish q0 like cloudflared."""
        self._call("register", s.REGISTRATION_SERVER_ID, s.REGISTER_CONNECTION,
                   lambda p: s.write_register_params(p.init_struct(0, 1, 3), params))
        if self._bootstrap_q is not None:
            self.session.finish(self._bootstrap_q)

    def unregister(self) -> None:
        self._call("unregister", s.REGISTRATION_SERVER_ID, s.UNREGISTER_CONNECTION, None)

    def update_local_configuration(self, config: bytes) -> None:
        self._call("local_config", s.REGISTRATION_SERVER_ID, s.UPDATE_LOCAL_CONFIGURATION,
                   lambda p: s.write_config_params(p.init_struct(0, 0, 1), config))

    def shutdown(self) -> None:
        """Release the bootstrap capability and Abort "rpc: shutdown", as cloudflared does."""
        imported = self.session.bootstrap_import()
        if imported is not None and not self.session.closed:
            self.session.release(imported, 1)
        self.session.abort("rpc: shutdown")

    def receive_data(self, data: bytes) -> list[object]:
        return [e for ev in self.session.receive_data(data) for e in self._client_event(ev)]

    def _result(self, kind: str, ev: CallReturned) -> list[object]:
        if kind == "register":
            return [RegistrationResult(s.read_register_results(ev.results))]
        if kind == "unregister":
            return [UnregisterCompleted()]
        if kind == "local_config":
            return [LocalConfigurationAcked()]
        return []


class ConfigurationClient(_Role):
    """Edge side of an edge-opened RPC stream (the caller writes RPC_SIGNATURE first)."""

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        super().__init__(RpcSession(max_message_size=max_message_size))

    def update_configuration(self, version: int, config: bytes) -> None:
        first = self._bootstrap_q is None and self.session.bootstrap_import() is None
        self._call("update_configuration", s.CONFIGURATION_MANAGER_ID, s.UPDATE_CONFIGURATION,
                   lambda p: s.write_update_configuration_params(p.init_struct(0, 1, 1),
                                                                 version, config))
        if first and self._bootstrap_q is not None:
            self.session.finish(self._bootstrap_q)

    def close(self) -> None:
        """Release the connector's capability (the stream can then be closed)."""
        imported = self.session.bootstrap_import()
        if imported is not None:
            self.session.release(imported, 1)

    def receive_data(self, data: bytes) -> list[object]:
        return [e for ev in self.session.receive_data(data) for e in self._client_event(ev)]

    def _result(self, kind: str, ev: CallReturned) -> list[object]:
        if kind == "update_configuration":
            version, err = s.read_update_configuration_results(ev.results)
            return [ConfigurationUpdated(version, err)]
        return []


class _Server:
    def __init__(self, interfaces: frozenset[int], max_message_size: int) -> None:
        self.session = RpcSession(interfaces=interfaces, max_message_size=max_message_size)

    def data_to_send(self) -> bytes:
        return self.session.data_to_send()

    @property
    def closed(self) -> bool:
        return self.session.closed

    def receive_data(self, data: bytes) -> list[object]:
        out: list[object] = []
        for ev in self.session.receive_data(data):
            if isinstance(ev, Aborted):
                out.append(PeerAborted(ev.reason))
            elif isinstance(ev, IncomingCall):
                try:
                    got = self._incoming(ev)
                except DecodeError as exc:
                    self.session.return_exception(ev.answer_id, f"malformed params: {exc}")
                    continue
                if got is None:
                    self.session.return_exception(ev.answer_id, "unimplemented",
                                                  ExceptionType.UNIMPLEMENTED)
                else:
                    out.append(got)
        return out

    def _incoming(self, ev: IncomingCall) -> object | None:
        return None

    def answer_error(self, question_id: int, reason: str) -> None:
        self.session.return_exception(question_id, reason)


class RegistrationServer(_Server):
    """Edge side of the control stream: serves a RegistrationServer bootstrap capability."""

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        super().__init__(frozenset({s.REGISTRATION_SERVER_ID}), max_message_size)

    def _incoming(self, ev: IncomingCall) -> object | None:
        if ev.method_id == s.REGISTER_CONNECTION:
            if ev.params is None:
                raise DecodeError("registerConnection without params")
            return RegisterRequested(ev.answer_id, s.read_register_params(ev.params))
        if ev.method_id == s.UNREGISTER_CONNECTION:
            return UnregisterRequested(ev.answer_id)
        if ev.method_id == s.UPDATE_LOCAL_CONFIGURATION:
            config = ev.params.data(0) if ev.params is not None else b""
            return LocalConfigurationReceived(ev.answer_id, config)
        return None

    def answer_register(self, question_id: int, response: s.ConnectionResponse) -> None:
        self.session.return_results(
            question_id, lambda p: s.write_register_results(p.init_struct(0, 0, 1), response))

    def answer_empty(self, question_id: int) -> None:
        self.session.return_results(question_id, None)


class CloudflaredServer(_Server):
    """Connector side of an RPC stream: ConfigurationManager; UDP sessions unimplemented."""

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        super().__init__(
            frozenset({s.CLOUDFLARED_SERVER_ID, s.SESSION_MANAGER_ID, s.CONFIGURATION_MANAGER_ID}),
            max_message_size)

    def _incoming(self, ev: IncomingCall) -> object | None:
        if ev.interface_id == s.CONFIGURATION_MANAGER_ID and ev.method_id == 0:
            if ev.params is None:
                raise DecodeError("updateConfiguration without params")
            version, config = s.read_update_configuration_params(ev.params)
            return UpdateConfigurationRequested(ev.answer_id, version, config)
        return None

    def answer_update_configuration(self, question_id: int, latest_applied_version: int,
                                    error: str) -> None:
        self.session.return_results(
            question_id,
            lambda p: s.write_update_configuration_results(p.init_struct(0, 0, 1),
                                                           latest_applied_version, error))
