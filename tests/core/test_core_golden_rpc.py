"""RPC golden vectors: decode what cloudflared/pycapnp sent, reproduce what cloudflared sends."""

from __future__ import annotations

import pytest
from core_vectors import vector, vector_index

from nbtunnel.core import rpcmsg as m
from nbtunnel.core import schema as s
from nbtunnel.core.capnp_read import read_message
from nbtunnel.core.registration import (
    CloudflaredServer,
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

CONN_UUID = bytes.fromhex("aaaaaaaabbbb4ccc8dddeeeeeeeeeeee")
FEATURES = ["allow_remote_config", "serialized_headers", "support_datagram_v2",
            "support_quic_eof", "management_logs"]
RPC_FILES = ["quic-control-c2e.bin", "quic-control-e2c.bin", "quic-control-unregister-c2e.bin",
             "quic-control-unregister-e2c.bin", "quic-rpc-update-configuration-e2c.bin",
             "quic-rpc-update-configuration-c2e.bin", "h2-control-c2e.bin", "h2-control-e2c.bin",
             "quick-control-c2e.bin"]


def split(name: str) -> list[tuple[int, bytes]]:
    """The index's message boundaries, each checked to be exactly one framed message."""
    data = vector(name)
    out = []
    for msg in vector_index()[name]["messages"]:
        raw = data[msg["offset"] : msg["offset"] + msg["length"]]
        if msg["kind"] in m.MESSAGE_KINDS.values():
            _, used = read_message(raw)
            assert used == len(raw)
            out.append((msg["offset"], raw))
    return out


def decode(raw: bytes) -> m.RpcMessage:
    return m.decode_message(read_message(raw)[0].root())


@pytest.mark.parametrize("name", RPC_FILES)
def test_every_rpc_message_decodes_to_the_indexed_kind(name: str) -> None:
    kinds = [k["kind"] for k in vector_index()[name]["messages"]]
    got = [type(decode(raw)).__name__.lower() for _, raw in split(name)]
    assert got == kinds


def expected_params(tunnel: str, tag: str, secret: bytes, client_id: bytes) -> object:
    return s.RegisterConnectionParams(
        auth=s.TunnelAuth(tag, secret),
        tunnel_id=bytes.fromhex(tunnel.replace("-", "")),
        conn_index=0,
        options=s.ConnectionOptions(
            client=s.ClientInfo(client_id, FEATURES, "2026.8.2", "linux_amd64"),
            origin_local_ip=bytes.fromhex("00000000000000000000ffff7f000001"),
        ),
    )


@pytest.mark.parametrize(("name", "tunnel", "tag", "secret", "client"), [
    ("quic-control-c2e.bin", "11111111-2222-3333-4444-555555555555",
     "0123456789abcdef0123456789abcdef", b"x" * 32, "d325068d9181426bb1fff281e452493f"),
    ("h2-control-c2e.bin", "11111111-2222-3333-4444-555555555555",
     "0123456789abcdef0123456789abcdef", b"x" * 32, "91312e4a7cbf43ffa315bfacad75f543"),
    ("quick-control-c2e.bin", "22222222-3333-4444-5555-666666666666",
     "quickacct0123456789abcdef012345", b"q" * 32, "ee5e95ef27f04369a274b15efdded179"),
])
def test_register_call_fields(name: str, tunnel: str, tag: str, secret: bytes, client: str) -> None:
    msgs = [decode(raw) for _, raw in split(name)]
    assert msgs[0] == m.Bootstrap(0)
    call = msgs[1]
    assert isinstance(call, m.Call)
    assert call.target == m.PromisedAnswer(0)
    assert (call.question_id, call.interface_id, call.method_id) == (1, s.REGISTRATION_SERVER_ID, 0)
    assert call.cap_table == [] and call.params is not None
    assert s.read_register_params(call.params) == expected_params(tunnel, tag, secret,
                                                                  bytes.fromhex(client))
    assert msgs[2] == m.Finish(0, False, True) and msgs[3] == m.Finish(1, False, True)
    ulc = msgs[4]
    assert isinstance(ulc, m.Call) and ulc.target == m.ImportedCap(0) and ulc.method_id == 2
    assert ulc.params is not None and ulc.params.data(0).startswith(b'{"__configuration_flags"')
    unreg = msgs[6]
    assert isinstance(unreg, m.Call) and unreg.method_id == 1 and unreg.question_id == 1
    assert unreg.params is not None and unreg.params.ptr_count == 0
    assert msgs[-1] == m.Abort(m.RpcException("rpc: shutdown", 0))


def test_edge_returns_decode() -> None:
    msgs = [decode(raw) for _, raw in split("quic-control-e2c.bin")]
    boot = msgs[0]
    assert isinstance(boot, m.Return) and boot.release_param_caps is True
    assert boot.content_cap == 0 and boot.cap_table == [m.CapDescriptor("senderHosted", 0)]
    reg = msgs[1]
    assert isinstance(reg, m.Return) and reg.answer_id == 1 and not reg.release_param_caps
    assert s.read_register_results(reg.content) == s.ConnectionDetails(CONN_UUID, "PRB", False)
    for empty in msgs[2:4]:
        assert isinstance(empty, m.Return) and empty.which == "results" and empty.content is None
    assert msgs[4] == m.Abort(m.RpcException("remote exception: rpc: shutdown", 0))


def test_rpc_stream_vectors_decode() -> None:
    e2c = [decode(raw) for _, raw in split("quic-rpc-update-configuration-e2c.bin")]
    call = e2c[1]
    assert isinstance(call, m.Call) and call.interface_id == s.CONFIGURATION_MANAGER_ID
    assert call.params is not None
    version, config = s.read_update_configuration_params(call.params)
    assert version == 1 and config.startswith(b'{"ingress":[{"hostname":"probe.example"')
    assert e2c[2] == m.Finish(0, False, False) and e2c[3] == m.Release(0, 1)
    c2e = [decode(raw) for _, raw in split("quic-rpc-update-configuration-c2e.bin")]
    boot = c2e[0]
    assert isinstance(boot, m.Return) and boot.release_param_caps is False  # go-capnp
    ret = c2e[1]
    assert isinstance(ret, m.Return)
    assert s.read_update_configuration_results(ret.content) == (1, "")


@pytest.mark.parametrize("name", ["quic-control-c2e.bin", "quick-control-c2e.bin"])
def test_registration_client_reproduces_cloudflared_bytes(name: str) -> None:
    """Driving RegistrationClient with the pycapnp edge's replies yields cloudflared's bytes."""
    data = vector(name)
    edge = vector("quic-control-e2c.bin")
    msgs = split(name)
    call = decode(msgs[1][1])
    assert isinstance(call, m.Call) and call.params is not None
    client = RegistrationClient()
    client.register(s.read_register_params(call.params))
    sent = client.data_to_send()
    assert sent == data[: msgs[3][0]]  # bootstrap, pipelined call, finish q0
    assert client.receive_data(edge[:240]) == [
        RegistrationResult(s.ConnectionDetails(CONN_UUID, "PRB", False))]
    sent += client.data_to_send()
    assert sent == data[: msgs[4][0]]
    ulc = decode(msgs[4][1])
    assert isinstance(ulc, m.Call) and ulc.params is not None
    client.update_local_configuration(ulc.params.data(0))
    assert client.receive_data(edge[240:312]) == [LocalConfigurationAcked()]
    client.unregister()
    assert client.receive_data(edge[312:384]) == [UnregisterCompleted()]
    client.shutdown()
    assert sent + client.data_to_send() == data
    assert client.receive_data(edge[384:]) == []  # closed after our Abort


def test_cloudflared_server_reproduces_cloudflared_bytes() -> None:
    e2c = vector("quic-rpc-update-configuration-e2c.bin")[6:]
    server = CloudflaredServer()
    events = server.receive_data(e2c[:368])
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, UpdateConfigurationRequested) and (ev.question_id, ev.version) == (1, 1)
    server.answer_update_configuration(ev.question_id, 1, "")
    assert server.data_to_send() == vector("quic-rpc-update-configuration-c2e.bin")
    assert server.receive_data(e2c[368:]) == []
    assert server.session.exports == {0: 0}


def test_registration_server_serves_cloudflared() -> None:
    data = vector("quic-control-c2e.bin")
    msgs = split("quic-control-c2e.bin")
    server = RegistrationServer()
    events = server.receive_data(data[: msgs[4][0]])
    assert len(events) == 1 and isinstance(events[0], RegisterRequested)
    server.answer_register(1, s.ConnectionDetails(CONN_UUID, "PRB"))
    boot = decode(server.data_to_send()[:96])
    assert isinstance(boot, m.Return) and boot.cap_table == [m.CapDescriptor("senderHosted", 0)]
    events = server.receive_data(data[msgs[4][0] : msgs[6][0]])
    assert isinstance(events[0], LocalConfigurationReceived) and len(events[0].config) == 464
    server.answer_empty(1)
    events = server.receive_data(data[msgs[6][0] :])
    assert events == [UnregisterRequested(1), PeerAborted("rpc: shutdown")]
    assert server.closed


def test_configuration_client_against_cloudflared_reply() -> None:
    from nbtunnel.core.registration import ConfigurationClient

    client = ConfigurationClient()
    client.update_configuration(1, b"{}")
    out = client.data_to_send()
    kinds = []
    while out:
        _, used = read_message(out)
        kinds.append(type(decode(out[:used])).__name__)
        out = out[used:]
    assert kinds == ["Bootstrap", "Call", "Finish"]
    assert client.receive_data(vector("quic-rpc-update-configuration-c2e.bin")) == [
        ConfigurationUpdated(1, "")]
    assert decode(client.data_to_send()) == m.Finish(1, False, True)
