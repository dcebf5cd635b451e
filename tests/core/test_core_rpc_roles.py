"""RPC state machines against each other, in memory (no I/O)."""

from __future__ import annotations

import pytest

from nbtunnel.core import rpcmsg as m
from nbtunnel.core import schema as s
from nbtunnel.core.capnp_read import read_message
from nbtunnel.core.errors import ProtocolError
from nbtunnel.core.registration import (
    CallFailed,
    CloudflaredServer,
    ConfigurationClient,
    ConfigurationUpdated,
    LocalConfigurationAcked,
    LocalConfigurationReceived,
    PeerAborted,
    RegisterRequested,
    RegistrationClient,
    RegistrationResult,
    RegistrationServer,
    UnregisterCompleted,
    UnregisterRequested,
    UpdateConfigurationRequested,
)
from nbtunnel.core.rpc import CallRaised, RpcSession

PARAMS = s.RegisterConnectionParams(
    auth=s.TunnelAuth("acct", b"k" * 32),
    tunnel_id=b"t" * 16,
    conn_index=1,
    options=s.ConnectionOptions(client=s.ClientInfo(b"c" * 16, ["a"], "v", "arch")),
)
DETAILS = s.ConnectionDetails(b"u" * 16, "PRB", False)


def messages(raw: bytes) -> list[m.RpcMessage]:
    out = []
    while raw:
        reader, used = read_message(raw)
        out.append(m.decode_message(reader.root()))
        raw = raw[used:]
    return out


def pump(a: object, b: object) -> tuple[list[object], list[object]]:
    """Move bytes both ways until quiet; return the events each side saw."""
    ea: list[object] = []
    eb: list[object] = []
    for _ in range(10):
        ab = a.data_to_send()  # type: ignore[attr-defined]
        ba = b.data_to_send()  # type: ignore[attr-defined]
        if not ab and not ba:
            break
        eb += b.receive_data(ab)  # type: ignore[attr-defined]
        ea += a.receive_data(ba)  # type: ignore[attr-defined]
    return ea, eb


def registered() -> tuple[RegistrationClient, RegistrationServer]:
    client, server = RegistrationClient(), RegistrationServer()
    client.register(PARAMS)
    ec, es = pump(client, server)
    assert es == [RegisterRequested(1, PARAMS)] and ec == []
    server.answer_register(1, DETAILS)
    ec, es = pump(client, server)
    assert ec == [RegistrationResult(DETAILS)] and es == []
    return client, server


def test_register_success_and_question_reuse() -> None:
    client, server = registered()
    assert client.session.bootstrap_import() == 0
    client.update_local_configuration(b"{}")
    ec, es = pump(client, server)
    assert es == [LocalConfigurationReceived(1, b"{}")]  # q1 reused, q0 kept for bootstrap
    server.answer_empty(1)
    ec, _ = pump(client, server)
    assert ec == [LocalConfigurationAcked()]
    client.unregister()
    _, es = pump(client, server)
    assert es == [UnregisterRequested(1)]
    server.answer_empty(1)
    ec, _ = pump(client, server)
    assert ec == [UnregisterCompleted()]
    client.shutdown()
    sent = client.data_to_send()
    assert [type(x) for x in messages(sent)] == [m.Release, m.Abort]
    assert server.receive_data(sent) == [PeerAborted("rpc: shutdown")]
    assert server.closed and client.closed and server.session.exports == {0: 0}
    assert client.receive_data(b"\x00" * 64) == []  # closed sessions ignore input


def test_register_error() -> None:
    client, server = RegistrationClient(), RegistrationServer()
    client.register(PARAMS)
    pump(client, server)
    err = s.RegistrationError("EDUPCONN", 10, True)
    server.answer_register(1, err)
    ec, _ = pump(client, server)
    assert ec == [RegistrationResult(err)]


def test_rpc_exception_becomes_call_failed() -> None:
    client, server = RegistrationClient(), RegistrationServer()
    client.register(PARAMS)
    pump(client, server)
    server.answer_error(1, "unauthorized")
    ec, _ = pump(client, server)
    assert ec == [CallFailed("unauthorized")]


def test_calls_pipelined_before_bootstrap_returns() -> None:
    client = RegistrationClient()
    client.register(PARAMS)
    client.update_local_configuration(b"cfg")  # still on promisedAnswer(q0)
    sent = messages(client.data_to_send())
    assert [type(x).__name__ for x in sent] == ["Bootstrap", "Call", "Finish", "Call"]
    assert sent[3].target == m.PromisedAnswer(0) and sent[3].question_id == 2  # type: ignore[union-attr]


def test_unknown_method_and_interface_get_unimplemented() -> None:
    client = RpcSession()
    server = RegistrationServer()
    q0 = client.bootstrap()
    q1 = client.call(m.PromisedAnswer(q0), s.REGISTRATION_SERVER_ID, 7, None)
    q2 = client.call(m.PromisedAnswer(q0), s.TUNNEL_SERVER_ID, 0, None)
    assert server.receive_data(client.data_to_send()) == []
    events = client.receive_data(server.data_to_send())
    raised = {e.question_id: e for e in events if isinstance(e, CallRaised)}
    assert set(raised) == {q1, q2}
    assert all(e.type == m.ExceptionType.UNIMPLEMENTED for e in raised.values())


def test_unknown_message_kind_is_echoed_unimplemented() -> None:
    server = RegistrationServer()
    raw = bytearray(m.encode_release(0, 1))
    raw[16] = 13  # disembargo
    assert server.receive_data(bytes(raw)) == []
    echo = messages(server.data_to_send())
    assert isinstance(echo[0], m.Unimplemented) and isinstance(echo[0].original, m.Other)


def test_protocol_violations_abort() -> None:
    server = RegistrationServer()
    with pytest.raises(ProtocolError):
        server.receive_data(m.encode_finish(5))
    assert server.closed
    assert isinstance(messages(server.data_to_send())[-1], m.Abort)
    client = RegistrationClient()
    with pytest.raises(ProtocolError):
        client.receive_data(m.encode_return_results(3, None))
    other = RegistrationServer()
    other.receive_data(m.encode_bootstrap(0))
    with pytest.raises(ProtocolError):
        other.receive_data(m.encode_bootstrap(0))
    with pytest.raises(ProtocolError):
        RegistrationServer().receive_data(m.encode_release(4, 1))


def test_malformed_params_answered_with_exception() -> None:
    server = RegistrationServer()
    server.receive_data(m.encode_bootstrap(0))
    bad = m.encode_call(1, m.ImportedCap(0), s.REGISTRATION_SERVER_ID, 0,
                        lambda p: p.init_struct(0, 1, 3).set_data(1, b"\xff"))
    assert server.receive_data(bad) == []
    out = messages(server.data_to_send())
    assert isinstance(out[-1], m.Return) and out[-1].which == "exception"


def test_call_on_unknown_capability() -> None:
    server = RegistrationServer()
    raw = m.encode_call(1, m.ImportedCap(3), s.REGISTRATION_SERVER_ID, 0, None)
    assert server.receive_data(raw) == []
    out = messages(server.data_to_send())
    assert isinstance(out[0], m.Return) and out[0].exception is not None


def test_configuration_client_and_cloudflared_server() -> None:
    edge, connector = ConfigurationClient(), CloudflaredServer()
    edge.update_configuration(3, b'{"ingress":[]}')
    _, ec = pump(edge, connector)
    assert ec == [UpdateConfigurationRequested(1, 3, b'{"ingress":[]}')]
    connector.answer_update_configuration(1, 3, "")
    ee, _ = pump(edge, connector)
    assert ee == [ConfigurationUpdated(3, "")]
    edge.update_configuration(2, b"{}")  # second call goes to the imported capability
    sent = messages(edge.data_to_send())
    assert [type(x).__name__ for x in sent] == ["Call"]
    assert sent[0].target == m.ImportedCap(0)  # type: ignore[union-attr]
    connector_events = connector.receive_data(
        m.encode_call(1, m.ImportedCap(0), s.CONFIGURATION_MANAGER_ID, 0,
                      lambda p: s.write_update_configuration_params(p.init_struct(0, 1, 1),
                                                                    2, b"{}")))
    assert connector_events == [UpdateConfigurationRequested(1, 2, b"{}")]
    connector.answer_update_configuration(1, 3, "version too old")
    got = edge.receive_data(connector.data_to_send())
    assert got == [ConfigurationUpdated(3, "version too old")]
    edge.close()
    assert connector.receive_data(edge.data_to_send()) == []
    assert connector.session.exports == {0: 0}


def test_udp_session_calls_are_unimplemented() -> None:
    edge, connector = RpcSession(), CloudflaredServer()
    q0 = edge.bootstrap()
    q1 = edge.call(m.PromisedAnswer(q0), s.SESSION_MANAGER_ID, 0, None)
    assert connector.receive_data(edge.data_to_send()) == []
    events = edge.receive_data(connector.data_to_send())
    assert any(getattr(e, "question_id", None) == q1 and getattr(e, "reason", "") == "unimplemented"
               for e in events)


def test_peer_abort_surfaces() -> None:
    client, server = registered()
    server.session.abort("going away")
    assert client.receive_data(server.data_to_send()) == [PeerAborted("going away")]
