"""The options of one tunnel, in one place for the CLI, the Python API and the magic.

`TunnelOptions` is what `open_tunnel(...)` takes as keywords; `add_tunnel_arguments` adds the
same options to an argparse parser (`nbtunnel tunnel` and `%tunnel` both call it), and
`TunnelOptions.check()` validates them with messages that name the option. A new connector
option is added here once and reaches all three.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from typing import Any

from nbtunnel.api.edges import DEFAULT_EDGE_PORT
from nbtunnel.api.errors import AddressError, TunnelError
from nbtunnel.api.targets import parse_host_port
from nbtunnel.connector.ingress import IngressError, parse_duration

PROTOCOLS = ("quic", "http2", "auto")
QUIC_BACKENDS = ("qh3", "aioquic")


class OptionError(TunnelError, ValueError):
    """An option value that cannot be used; the message names the option."""


@dataclass(frozen=True)
class TunnelOptions:
    """Connector options shared by the CLI, the API and the magic (defaults: the API's)."""

    edge: str | None = None              # cloudflare, local, auto or HOST:PORT (None:
    #                                      $NBTUNNEL_EDGE, config.json, else auto)
    cacert: str | None = None
    quick_service: str | None = None
    ha_connections: int = 4              # quick tunnels on Cloudflare use 1 (as cloudflared)
    protocol: str | None = None          # quic on a local/self-hosted edge; on Cloudflare's
    #                                      quic with the HTTP/2 fallback (auto)
    grace_period: float = 5.0
    quic_backend: str | None = None
    http_host_header: str | None = None  # originRequest.httpHostHeader (+ Origin rewrite)
    jupyter: bool | None = None          # None: detect a Jupyter server and apply its preset
    auth: str | None = None              # "user:password" (HTTP Basic) or "token"
    inspect: bool = True                 # keep the last requests for t.requests / the panel
    timeout: float = 30.0                # first registration
    token: str | None = None             # run a named tunnel (ingress from its configuration)
    region: str | None = None            # Cloudflare region (us, fed...) for edge discovery
    edge_ip_version: str = "auto"        # 4, 6 or auto: Cloudflare edge addresses
    user_agent: str | None = None        # toward the quick API (default nbtunnel/VERSION)

    def check(self) -> TunnelOptions:
        if self.ha_connections < 1:
            raise OptionError("ha_connections (--ha-connections) must be at least 1")
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise OptionError(f"protocol (--protocol) {self.protocol!r} is not one of "
                              f"{', '.join(PROTOCOLS)}")
        if self.quic_backend is not None and self.quic_backend not in QUIC_BACKENDS:
            raise OptionError(f"quic_backend (--quic-backend) {self.quic_backend!r} is not one "
                              f"of {', '.join(QUIC_BACKENDS)}")
        if not 0 <= self.grace_period <= 180:
            raise OptionError("grace_period (--grace-period) must be between 0 and 3m")
        if self.edge_ip_version not in ("4", "6", "auto"):
            raise OptionError(f"edge_ip_version (--edge-ip-version) {self.edge_ip_version!r} "
                              "is not one of 4, 6, auto")
        if self.timeout <= 0:
            raise OptionError("timeout (--timeout) must be positive")
        if self.http_host_header is not None and (
                not self.http_host_header.strip() or any(c in self.http_host_header
                                                         for c in " /\r\n")):
            raise OptionError(f"http_host_header (--http-host-header) {self.http_host_header!r} "
                              "must be a HOST or HOST:PORT")
        if self.auth is not None:
            from nbtunnel.connector.access_control import AccessControlError, parse_auth

            try:
                parse_auth(self.auth)
            except AccessControlError as exc:
                raise OptionError(f"auth (--auth): {exc}") from exc
        return self

    def merged(self, **changes: Any) -> TunnelOptions:
        """A copy with the given fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def duration(text: str) -> float:
    """argparse type: Go-style durations ("30s", "1m30s", "500ms") or plain seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text, "duration")
    except IngressError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("duration: ")) from exc


def host_port(text: str, default_port: int = DEFAULT_EDGE_PORT) -> tuple[str, int]:
    """argparse type: HOST:PORT (default port 7844)."""
    try:
        return parse_host_port(text, default_port)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def edge_arg(text: str) -> str | tuple[str, int]:
    """argparse type of the CLI's --edge: a keyword (auto, cloudflare, local) or HOST:PORT."""
    from nbtunnel.api.edges import edge_kind

    kind = edge_kind(text)
    if kind is not None:
        return kind
    try:
        return parse_host_port(text, DEFAULT_EDGE_PORT)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or cloudflare, local, auto)") from exc


EDGE_HELP = ("cloudflare: Cloudflare's edge, a public https://*.trycloudflare.com URL; local: an "
             "edge started in this process (its URL works on this machine only); auto: "
             "Cloudflare if it answers within seconds, else local; HOST:PORT: a self-hosted "
             "edge. Default: $NBTUNNEL_EDGE, `edge` in $NBTUNNEL_HOME/config.json, else auto")


def add_cloudflare_arguments(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """Cloudflare's edge: region, address family, the quick API's User-Agent."""
    parser.add_argument("--region", default=default, metavar="REGION",
                        help="Cloudflare region (e.g. us, fed) for edge discovery")
    parser.add_argument("--edge-ip-version", default=default, choices=["4", "6", "auto"],
                        help="IP version of Cloudflare's edge addresses (auto)")
    parser.add_argument("--user-agent", default=default, metavar="UA",
                        help="User-Agent toward the quick-tunnel API (default: "
                        "nbtunnel/VERSION, or $NBTUNNEL_USER_AGENT)")


def add_tunnel_arguments(parser: argparse.ArgumentParser, *, cli: bool) -> None:
    """Every connector option as a flag. `cli` keeps the CLI's forms (a repeatable --edge,
    a 30 s grace period applied by the command, defaults left None so config.yml can supply
    them); the magic takes one --edge (checked when the tunnel opens), the API's 5 s grace
    period and --token."""
    d = TunnelOptions()
    if cli:
        parser.add_argument("--edge", action="append", type=edge_arg,
                            metavar="cloudflare|local|auto|HOST:PORT",
                            help=EDGE_HELP + " (HOST:PORT is repeatable)")
    else:
        parser.add_argument("--edge", metavar="cloudflare|local|auto|HOST:PORT", help=EDGE_HELP)
        parser.add_argument("--token", metavar="TOKEN",
                            help="run a named tunnel (its token from the Cloudflare dashboard or "
                            "`nbtunnel tunnel token`); hostnames and ingress come from the "
                            "tunnel's configuration")
    parser.add_argument("--grace-period", type=duration, default=None if cli else d.grace_period,
                        help="time to finish in-flight requests on shutdown "
                        f"({'30s' if cli else '5s'}, max 3m)")
    parser.add_argument("--cacert", help="PEM CA for the edge certificate (on Cloudflare it "
                        "replaces the bundled Cloudflare roots, as cloudflared's --cacert)")
    parser.add_argument("--quick-service", metavar="URL", help="quick-tunnel API base URL "
                        "(default: https://api.trycloudflare.com on Cloudflare, "
                        "http://EDGE_HOST:8080 on a self-hosted edge)")
    parser.add_argument("--ha-connections", type=int, default=None if cli else d.ha_connections,
                        metavar="N", help=f"connections to keep open to the edge "
                        f"({d.ha_connections}; quick tunnels on Cloudflare: 1, as cloudflared)")
    parser.add_argument("--protocol", default=None if cli else d.protocol, choices=PROTOCOLS,
                        help="transport protocol (quic; auto falls back to http2 when UDP is "
                        "blocked; default: quic, or auto on Cloudflare's edge)")
    add_cloudflare_arguments(parser)
    parser.add_argument("--quic-backend", choices=QUIC_BACKENDS, default=None,
                        help="QUIC library (default: qh3)")
    parser.add_argument("--http-host-header", metavar="HOST[:PORT]",
                        help="Host header sent to the origin (cloudflared's httpHostHeader); "
                        "an Origin/Referer naming the public hostname is rewritten to match")
    jupyter = parser.add_mutually_exclusive_group()
    jupyter.add_argument("--jupyter", dest="jupyter", action="store_true", default=None,
                         help="apply the Jupyter preset (Host and Origin of the target) "
                         "without asking the target; by default it is applied when the target "
                         "answers /api like a Jupyter server")
    jupyter.add_argument("--no-jupyter", dest="jupyter", action="store_false",
                         help="never apply the Jupyter preset")
    parser.add_argument("--auth", metavar="USER:PASSWORD|token",
                        help="protect the public URL: HTTP Basic with USER:PASSWORD, or "
                        "`token` for a random token shown once (?nbtunnel_token=... sets a "
                        "cookie; API clients send Authorization: Bearer ...)")
    parser.add_argument("--no-inspect", dest="inspect", action="store_false", default=True,
                        help="do not keep the last requests (headers, first KiBs of bodies)")


def options_from_args(args: argparse.Namespace, **overrides: Any) -> TunnelOptions:
    """TunnelOptions from a namespace filled by add_tunnel_arguments (missing names keep
    their defaults)."""
    names = {f.name for f in fields(TunnelOptions)}
    values = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    values.update(overrides)
    return TunnelOptions(**values)
