"""Our schema files load in pycapnp, and our codec and pycapnp read each other's bytes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nbtunnel.core import rpcmsg as m
from nbtunnel.core import schema as s
from nbtunnel.core.capnp_read import read_message
from nbtunnel.core.streams import (
    ConnectionType,
    ConnectRequest,
    ConnectResponse,
    HeadParser,
    encode_connect_request,
    encode_connect_response,
)

PARAMS = s.RegisterConnectionParams(
    auth=s.TunnelAuth("acct", b"s" * 32),
    tunnel_id=bytes(range(16)),
    conn_index=3,
    options=s.ConnectionOptions(
        client=s.ClientInfo(b"c" * 16, ["f1", "f2"], "2026.8.2", "linux_amd64"),
        origin_local_ip=b"\x7f\x00\x00\x01",
        replace_existing=True,
        compression_quality=2,
        num_previous_attempts=5,
    ),
)

# (schema node, id, data words, pointer count) exactly as our encoders allocate them
LAYOUTS = [
    ("tunnel", "ClientInfo", 0x83CED0145B2F114B, 0, 4),
    ("tunnel", "ConnectionOptions", 0xB4BF9861FE035D04, 1, 2),
    ("tunnel", "TunnelAuth", 0x9496331AB9CD463F, 0, 2),
    ("tunnel", "ConnectionResponse", 0xDBAA9D03D52B62DC, 1, 1),
    ("tunnel", "ConnectionError", 0xF5F383D2785EDB86, 2, 1),
    ("tunnel", "ConnectionDetails", 0xB5F39F082B9AC18A, 1, 2),
    ("tunnel", "UpdateConfigurationResponse", 0xDB58FF694BA05CF9, 1, 1),
    ("tunnel", "RegisterUdpSessionResponse", 0xAB6D5210C1F26687, 0, 2),
    ("quic", "ConnectRequest", 0xC47116A1045E4061, 1, 2),
    ("quic", "ConnectResponse", 0xB1032EC91CEF8727, 0, 2),
    ("quic", "Metadata", 0xE1446B97BFD1CD37, 0, 2),
    ("rpc", "Message", None, 1, 1),
    ("rpc", "Bootstrap", None, 1, 1),
    ("rpc", "Call", None, 3, 3),
    ("rpc", "Return", None, 2, 1),
    ("rpc", "Finish", None, 1, 0),
    ("rpc", "Release", None, 1, 0),
    ("rpc", "MessageTarget", None, 1, 1),
    ("rpc", "PromisedAnswer", None, 1, 1),
    ("rpc", "Payload", None, 0, 2),
    ("rpc", "CapDescriptor", None, 1, 1),
]


@pytest.mark.parametrize(("mod", "name", "node_id", "dw", "pc"), LAYOUTS)
def test_layouts_match_the_compiler(pycapnp: SimpleNamespace, mod: str, name: str,
                                    node_id: int | None, dw: int, pc: int) -> None:
    node = getattr(getattr(pycapnp, mod), name).schema.node
    if node_id is not None:
        assert node.id == node_id
    assert (node.struct.dataWordCount, node.struct.pointerCount) == (dw, pc)


def test_interface_ids_and_method_layouts(pycapnp: SimpleNamespace) -> None:
    t = pycapnp.tunnel
    assert t.RegistrationServer.schema.node.id == s.REGISTRATION_SERVER_ID
    assert t.SessionManager.schema.node.id == s.SESSION_MANAGER_ID
    assert t.ConfigurationManager.schema.node.id == s.CONFIGURATION_MANAGER_ID
    assert t.CloudflaredServer.schema.node.id == s.CLOUDFLARED_SERVER_ID
    assert t.TunnelServer.schema.node.id == s.TUNNEL_SERVER_ID
    methods = t.RegistrationServer.schema.methods
    sizes = {k: (v.param_type.node.struct.dataWordCount, v.param_type.node.struct.pointerCount)
             for k, v in methods.items()}
    assert sizes == {"registerConnection": (1, 3), "unregisterConnection": (0, 0),
                     "updateLocalConfiguration": (0, 1)}
    upd = t.ConfigurationManager.schema.methods["updateConfiguration"].param_type.node.struct
    assert (upd.dataWordCount, upd.pointerCount) == (1, 1)
    assert pycapnp.quic.ConnectRequest.schema.node.id == 0xC47116A1045E4061


def _params_type(pycapnp: SimpleNamespace, iface: str, method: str) -> object:
    return getattr(pycapnp.tunnel, iface).schema.methods[method].param_type


def _result_type(pycapnp: SimpleNamespace, iface: str, method: str) -> object:
    return getattr(pycapnp.tunnel, iface).schema.methods[method].result_type


def test_register_call_read_by_pycapnp(pycapnp: SimpleNamespace) -> None:
    raw = m.encode_call(1, m.PromisedAnswer(0), s.REGISTRATION_SERVER_ID, 0,
                        lambda p: s.write_register_params(p.init_struct(0, 1, 3), PARAMS))
    with pycapnp.rpc.Message.from_bytes(raw) as msg:
        assert msg.which() == "call"
        call = msg.call
        ids = (call.questionId, call.interfaceId, call.methodId)
        assert ids == (1, s.REGISTRATION_SERVER_ID, 0)
        assert call.target.which() == "promisedAnswer"
        assert call.target.promisedAnswer.questionId == 0
        assert len(call.params.capTable) == 0
        p = call.params.content.as_struct(_params_type(pycapnp, "RegistrationServer",
                                                       "registerConnection"))
        assert p.auth.accountTag == "acct" and p.auth.tunnelSecret == b"s" * 32
        assert p.tunnelId == bytes(range(16)) and p.connIndex == 3
        o = p.options
        assert (o.replaceExisting, o.compressionQuality, o.numPreviousAttempts) == (True, 2, 5)
        assert o.originLocalIp == b"\x7f\x00\x00\x01"
        assert list(o.client.features) == ["f1", "f2"]
        assert (o.client.clientId, o.client.version, o.client.arch) == (
            b"c" * 16, "2026.8.2", "linux_amd64")


def test_register_call_built_by_pycapnp(pycapnp: SimpleNamespace) -> None:
    b = pycapnp.rpc.Message.new_message()
    call = b.init("call")
    call.questionId = 4
    call.interfaceId = s.REGISTRATION_SERVER_ID
    call.target.importedCap = 9
    p = call.params.content.as_struct(_params_type(pycapnp, "RegistrationServer",
                                                   "registerConnection"))
    p.connIndex = 3
    p.tunnelId = bytes(range(16))
    p.init("auth").accountTag = "acct"
    p.auth.tunnelSecret = b"s" * 32
    o = p.init("options")
    o.originLocalIp = b"\x7f\x00\x00\x01"
    o.replaceExisting = True
    o.compressionQuality = 2
    o.numPreviousAttempts = 5
    c = o.init("client")
    c.clientId = b"c" * 16
    c.features = ["f1", "f2"]
    c.version = "2026.8.2"
    c.arch = "linux_amd64"
    msg = m.decode_message(read_message(b.to_bytes())[0].root())
    assert isinstance(msg, m.Call) and msg.target == m.ImportedCap(9) and msg.question_id == 4
    assert msg.params is not None and s.read_register_params(msg.params) == PARAMS


@pytest.mark.parametrize("response", [
    s.ConnectionDetails(b"u" * 16, "PRB", True),
    s.RegistrationError("EDUPCONN", 5_000_000_000, True),
])
def test_register_results_both_ways(pycapnp: SimpleNamespace,
                                    response: s.ConnectionResponse) -> None:
    raw = m.encode_return_results(1, lambda p: s.write_register_results(p.init_struct(0, 0, 1),
                                                                        response))
    rtype = _result_type(pycapnp, "RegistrationServer", "registerConnection")
    with pycapnp.rpc.Message.from_bytes(raw) as msg:
        ret = getattr(msg, "return")
        assert ret.answerId == 1 and ret.releaseParamCaps is False
        res = ret.results.content.as_struct(rtype).result.result
        if isinstance(response, s.ConnectionDetails):
            d = res.connectionDetails
            assert (d.uuid, d.locationName, d.tunnelIsRemotelyManaged) == (b"u" * 16, "PRB", True)
        else:
            e = res.error
            assert (e.cause, e.retryAfter, e.shouldRetry) == ("EDUPCONN", 5_000_000_000, True)
    # and back: pycapnp builds the same Return
    b = pycapnp.rpc.Message.new_message()
    ret = b.init("return")
    ret.answerId = 1
    content = ret.init("results").content.as_struct(rtype)
    inner = content.init("result").result
    if isinstance(response, s.ConnectionDetails):
        d = inner.init("connectionDetails")
        d.uuid, d.locationName, d.tunnelIsRemotelyManaged = b"u" * 16, "PRB", True
    else:
        e = inner.init("error")
        e.cause, e.retryAfter, e.shouldRetry = "EDUPCONN", 5_000_000_000, True
    decoded = m.decode_message(read_message(b.to_bytes())[0].root())
    assert isinstance(decoded, m.Return) and decoded.release_param_caps is True
    assert s.read_register_results(decoded.content) == response


def test_small_messages_read_by_pycapnp(pycapnp: SimpleNamespace) -> None:
    rpc = pycapnp.rpc
    with rpc.Message.from_bytes(m.encode_bootstrap(7)) as msg:
        assert msg.which() == "bootstrap" and msg.bootstrap.questionId == 7
    with rpc.Message.from_bytes(m.encode_finish(3)) as msg:
        f = msg.finish
        assert (f.questionId, f.releaseResultCaps, f.requireEarlyCancellationWorkaround) == (
            3, False, True)
    with rpc.Message.from_bytes(m.encode_release(2, 5)) as msg:
        assert (msg.release.id, msg.release.referenceCount) == (2, 5)
    with rpc.Message.from_bytes(m.encode_abort("bye", m.ExceptionType.DISCONNECTED)) as msg:
        assert msg.abort.reason == "bye" and msg.abort.type == "disconnected"
    with rpc.Message.from_bytes(m.encode_return_exception(4, "nope", 3)) as msg:
        ret = getattr(msg, "return")
        assert ret.which() == "exception" and ret.exception.reason == "nope"
        assert ret.exception.type == "unimplemented"
    boot = m.encode_return_results(0, lambda p: p.set_capability(0, 0), [0])
    with rpc.Message.from_bytes(boot) as msg:
        ret = getattr(msg, "return")
        assert ret.results.capTable[0].which() == "senderHosted"
        assert ret.results.capTable[0].senderHosted == 0


def test_small_messages_built_by_pycapnp(pycapnp: SimpleNamespace) -> None:
    rpc = pycapnp.rpc

    def decode(b: object) -> m.RpcMessage:
        return m.decode_message(read_message(b.to_bytes())[0].root())  # type: ignore[attr-defined]

    b = rpc.Message.new_message()
    b.init("finish").questionId = 9
    assert decode(b) == m.Finish(9, True, True)
    b = rpc.Message.new_message()
    rel = b.init("release")
    rel.id, rel.referenceCount = 1, 2
    assert decode(b) == m.Release(1, 2)
    b = rpc.Message.new_message()
    ab = b.init("abort")
    ab.reason, ab.type = "x", "overloaded"
    assert decode(b) == m.Abort(m.RpcException("x", 1))
    b = rpc.Message.new_message()
    call = b.init("call")
    pa = call.target.init("promisedAnswer")
    pa.questionId = 2
    ops = pa.init("transform", 2)
    ops[0].noop = None
    ops[1].getPointerField = 4
    call.params.content.as_struct(
        _params_type(pycapnp, "RegistrationServer", "unregisterConnection"))
    got = decode(b)
    assert isinstance(got, m.Call) and got.target == m.PromisedAnswer(2, (4,))


def test_update_configuration_both_ways(pycapnp: SimpleNamespace) -> None:
    raw = m.encode_call(1, m.ImportedCap(0), s.CONFIGURATION_MANAGER_ID, 0,
                        lambda p: s.write_update_configuration_params(p.init_struct(0, 1, 1),
                                                                      -1, b"{}"))
    ptype = _params_type(pycapnp, "ConfigurationManager", "updateConfiguration")
    with pycapnp.rpc.Message.from_bytes(raw) as msg:
        p = msg.call.params.content.as_struct(ptype)
        assert (p.version, p.config) == (-1, b"{}")
    raw = m.encode_return_results(
        1, lambda p: s.write_update_configuration_results(p.init_struct(0, 0, 1), 7, "bad"))
    rtype = _result_type(pycapnp, "ConfigurationManager", "updateConfiguration")
    with pycapnp.rpc.Message.from_bytes(raw) as msg:
        r = getattr(msg, "return").results.content.as_struct(rtype).result
        assert (r.latestAppliedVersion, r.err) == (7, "bad")


@pytest.mark.parametrize("req", [
    ConnectRequest("https://h/p?q", ConnectionType.HTTP, [("HttpMethod", "GET"), ("k", "")]),
    ConnectRequest("1.2.3.4:5", ConnectionType.TCP, []),
    ConnectRequest("", ConnectionType.WEBSOCKET, [("HttpHeader:A", "ü")]),
])
def test_connect_request_both_ways(pycapnp: SimpleNamespace, req: ConnectRequest) -> None:
    raw = encode_connect_request(req)
    with pycapnp.quic.ConnectRequest.from_bytes(raw[8:]) as r:
        assert (r.dest, r.type) == (req.dest, req.type.name.lower())
        assert [(e.key, e.val) for e in r.metadata] == req.metadata
    b = pycapnp.quic.ConnectRequest.new_message()
    b.dest, b.type = req.dest, req.type.name.lower()
    entries = b.init("metadata", len(req.metadata))
    for e, (k, v) in zip(entries, req.metadata, strict=True):
        e.key, e.val = k, v
    assert HeadParser("request").feed(raw[:8] + b.to_bytes()) == req


@pytest.mark.parametrize("resp", [
    ConnectResponse("", [("HttpStatus", "200"), ("HttpHeader:X", "y")]),
    ConnectResponse("boom", []),
    ConnectResponse("", []),
])
def test_connect_response_both_ways(pycapnp: SimpleNamespace, resp: ConnectResponse) -> None:
    raw = encode_connect_response(resp)
    with pycapnp.quic.ConnectResponse.from_bytes(raw[8:]) as r:
        assert r.error == resp.error
        assert [(e.key, e.val) for e in r.metadata] == resp.metadata
    b = pycapnp.quic.ConnectResponse.new_message()
    b.error = resp.error
    entries = b.init("metadata", len(resp.metadata))
    for e, (k, v) in zip(entries, resp.metadata, strict=True):
        e.key, e.val = k, v
    assert HeadParser("response").feed(raw[:8] + b.to_bytes()) == resp
