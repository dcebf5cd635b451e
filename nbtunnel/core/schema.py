"""cloudflared's tunnelrpc structs as dataclasses, with their Cap'n Proto layouts.

Layouts (data words, pointer count, offsets) are those the capnp compiler assigns to
``schema/tunnelrpc.capnp``; write order follows go-capnp's pogs so encodings match
cloudflared byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbtunnel.core.capnp_read import StructReader
from nbtunnel.core.capnp_write import StructBuilder
from nbtunnel.core.errors import DecodeError

REGISTRATION_SERVER_ID = 0xF71695EC7FE85497
TUNNEL_SERVER_ID = 0xEA58385C65416035
SESSION_MANAGER_ID = 0x839445A59FB01686
CONFIGURATION_MANAGER_ID = 0xB48EDFBDAA25DB04
CLOUDFLARED_SERVER_ID = 0xF548CEF9DEA2A4A1

# RegistrationServer methods
REGISTER_CONNECTION = 0
UNREGISTER_CONNECTION = 1
UPDATE_LOCAL_CONFIGURATION = 2
# SessionManager methods
REGISTER_UDP_SESSION = 0
UNREGISTER_UDP_SESSION = 1
# ConfigurationManager methods
UPDATE_CONFIGURATION = 0


@dataclass
class ClientInfo:
    client_id: bytes
    features: list[str]
    version: str
    arch: str


@dataclass
class ConnectionOptions:
    client: ClientInfo
    origin_local_ip: bytes = b""
    replace_existing: bool = False
    compression_quality: int = 0
    num_previous_attempts: int = 0


@dataclass
class TunnelAuth:
    account_tag: str
    tunnel_secret: bytes = field(repr=False)


@dataclass
class RegisterConnectionParams:
    auth: TunnelAuth
    tunnel_id: bytes
    conn_index: int
    options: ConnectionOptions


@dataclass
class ConnectionDetails:
    uuid: bytes
    location_name: str
    tunnel_is_remotely_managed: bool = False


@dataclass
class RegistrationError:
    """capnp ``ConnectionError``: the edge refused the registration."""

    cause: str
    retry_after_ns: int = 0
    should_retry: bool = False


ConnectionResponse = ConnectionDetails | RegistrationError


def _need(s: StructReader | None, what: str) -> StructReader:
    if s is None:
        raise DecodeError(f"missing {what}")
    return s


# --- registerConnection params: struct (1 data word, 3 pointers) ---------------------------

def write_register_params(p: StructBuilder, params: RegisterConnectionParams) -> None:
    """Fill a registerConnection params struct (allocated as 1 data word, 3 pointers)."""
    p.set_u8(0, params.conn_index)
    auth = p.init_struct(0, 0, 2)
    auth.set_text(0, params.auth.account_tag)
    auth.set_data(1, params.auth.tunnel_secret)
    p.set_data(1, params.tunnel_id)
    opts = p.init_struct(2, 1, 2)
    o = params.options
    client = opts.init_struct(0, 0, 4)
    client.set_data(0, o.client.client_id)
    client.set_text_list(1, o.client.features)
    client.set_text(2, o.client.version)
    client.set_text(3, o.client.arch)
    opts.set_data(1, o.origin_local_ip)
    opts.set_bool(0, o.replace_existing)
    opts.set_u8(1, o.compression_quality)
    opts.set_u8(2, o.num_previous_attempts)


def read_register_params(p: StructReader) -> RegisterConnectionParams:
    auth = _need(p.struct(0), "auth")
    opts = _need(p.struct(2), "options")
    client = _need(opts.struct(0), "options.client")
    return RegisterConnectionParams(
        auth=TunnelAuth(auth.text(0), auth.data(1)),
        tunnel_id=p.data(1),
        conn_index=p.u8(0),
        options=ConnectionOptions(
            client=ClientInfo(client.data(0), client.texts(1), client.text(2), client.text(3)),
            origin_local_ip=opts.data(1),
            replace_existing=opts.bit(0),
            compression_quality=opts.u8(1),
            num_previous_attempts=opts.u8(2),
        ),
    )


# --- registerConnection results: (0 data, 1 ptr) -> ConnectionResponse (1, 1) ---------------

def write_register_results(results: StructBuilder, response: ConnectionResponse) -> None:
    """Fill registerConnection results (0 data words, 1 pointer)."""
    resp = results.init_struct(0, 1, 1)
    if isinstance(response, ConnectionDetails):
        resp.set_u16(0, 1)
        d = resp.init_struct(0, 1, 2)
        d.set_data(0, response.uuid)
        d.set_text(1, response.location_name)
        d.set_bool(0, response.tunnel_is_remotely_managed)
    else:
        resp.set_u16(0, 0)
        e = resp.init_struct(0, 2, 1)
        e.set_text(0, response.cause)
        e.set_u64(0, response.retry_after_ns)
        e.set_bool(64, response.should_retry)


def read_register_results(results: StructReader | None) -> ConnectionResponse:
    resp = _need(_need(results, "results").struct(0), "result")
    which = resp.u16(0)
    inner = _need(resp.struct(0), "ConnectionResponse.result")
    if which == 1:
        return ConnectionDetails(inner.data(0), inner.text(1), inner.bit(0))
    if which == 0:
        return RegistrationError(inner.text(0), inner.i64(0), inner.bit(64))
    raise DecodeError(f"unknown ConnectionResponse variant {which}")


# --- updateLocalConfiguration params: (0, 1) ------------------------------------------------

def write_config_params(p: StructBuilder, config: bytes) -> None:
    p.set_data(0, config)


# --- updateConfiguration: params (1, 1), results (0, 1) -> response (1, 1) ------------------

def write_update_configuration_params(p: StructBuilder, version: int, config: bytes) -> None:
    p.set_u32(0, version)
    p.set_data(0, config)


def read_update_configuration_params(p: StructReader) -> tuple[int, bytes]:
    return p.i32(0), p.data(0)


def write_update_configuration_results(results: StructBuilder, version: int, err: str) -> None:
    r = results.init_struct(0, 1, 1)
    r.set_u32(0, version)
    r.set_text(0, err)


def read_update_configuration_results(results: StructReader | None) -> tuple[int, str]:
    r = _need(_need(results, "results").struct(0), "result")
    return r.i32(0), r.text(0)
