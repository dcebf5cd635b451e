"""The command line's parser: every command, flag and help text, and the argument types.

Flags mirror cloudflared's where they exist (`--url`, `--edge`, `--cacert`, `--quick-service`,
`--ha-connections`, `--protocol`, `--grace-period`); `nbtunnel tunnel --url X` (no subcommand)
is the quick tunnel, the control-plane subcommands (create, list, info, delete, cleanup, token,
route, run, ingress) are optional. Building it imports nothing heavy so `--help` is instant.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from nbtunnel import __version__
from nbtunnel.api.edges import DEFAULT_EDGE_PORT, DEFAULT_HTTP_PORT
from nbtunnel.api.options import (
    add_cloudflare_arguments,
    add_tunnel_arguments,
    duration,
    edge_arg,
    host_port,
)

S = argparse.SUPPRESS


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbtunnel",
        description="A pure-Python Cloudflare Tunnel: publish a local service through an "
        "outbound connection to an edge (Cloudflare's, or a local one).",
        epilog="Quick start: `nbtunnel tunnel --url 8000` prints a public "
        "https://<words>.trycloudflare.com URL for http://localhost:8000 (Cloudflare's free "
        "quick tunnels; no account). Without internet it starts a local edge instead.",
    )
    parser.add_argument("--version", action="version", version=f"nbtunnel {__version__}")
    parser.add_argument("--loglevel", default=os.environ.get("NBTUNNEL_LOGLEVEL", "info"),
                        choices=["debug", "info", "warn", "error"], help="log level (info)")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="human-readable text (default) or one JSON object per line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    edge = sub.add_parser("edge", help="run an edge: connector listener, API and public front",
                          description="Run a local edge that cloudflared and nbtunnel "
                          "connectors can connect to.")
    edge.add_argument("--listen", type=host_port, default=("127.0.0.1", DEFAULT_EDGE_PORT),
                      metavar="HOST:PORT",
                      help="address for connectors: QUIC on UDP, HTTP/2 on TCP (127.0.0.1:7844)")
    edge.add_argument("--http", type=lambda t: host_port(t, DEFAULT_HTTP_PORT),
                      default=("127.0.0.1", DEFAULT_HTTP_PORT), metavar="HOST:PORT",
                      help="public HTTP front and API (127.0.0.1:8080)")
    edge.add_argument("--domain", default="localhost",
                      help="domain for quick-tunnel hostnames (localhost: *.localhost resolves "
                      "to loopback)")
    edge.add_argument("--state-dir", type=Path, default=None,
                      help="where the CA, certificates and tunnel store live "
                      "(~/.nbtunnel/edge, or $NBTUNNEL_HOME/edge)")
    edge.add_argument("--location", default="LOC", help="location name sent to connectors (LOC)")
    edge.add_argument("--quic-backend", choices=["qh3", "aioquic"], default=None,
                      help="QUIC library (default: qh3)")
    edge.add_argument("--quick-tunnel-rate", type=non_negative, default=10.0, metavar="N",
                      help="quick tunnels one client address may create per minute, in bursts "
                      "of up to 20 (10; 0: no limit); beyond it: 429, error code 1015")
    edge.add_argument("--quick-tunnel-expiry", type=duration, default=3600.0,
                      metavar="DURATION", help="delete a quick tunnel that has had no "
                      "connection for this long (1h; 0: never)")
    edge.add_argument("--registration-timeout", type=duration, default=15.0,
                      metavar="DURATION", help="close a connector connection that has not "
                      "registered within this long (15s)")
    edge.add_argument("--min-body-rate", type=non_negative, default=500.0, metavar="N",
                      help="request bodies must average N bytes/s once the edge has waited "
                      "20s for them (500; 0: no minimum); slower ones get 408 "
                      "(docs/refusals.md)")
    edge.add_argument("--https", type=lambda t: host_port(t, 443), default=None,
                      metavar="HOST:PORT", help="also serve the public front over TLS here "
                      "(HTTP/2 and HTTP/1.1; what `cloudflared access` needs)")
    edge.add_argument("--https-cert", action="append", type=Path, default=[], metavar="FILE",
                      help="PEM certificate (chain) for --https, e.g. a wildcard for "
                      "*.DOMAIN; repeatable, paired with --https-key; SNI picks; reloaded on "
                      "SIGHUP. Without it the edge's CA issues one per hostname")
    edge.add_argument("--https-key", action="append", type=Path, default=[], metavar="FILE",
                      help="PEM private key of the matching --https-cert")
    edge.add_argument("--https-redirect", action="store_true",
                      help="answer plain-HTTP requests for tunnel hostnames with a 308 to "
                      "--https")
    scale = edge.add_argument_group(
        "several edges", "one deployment of several edges (docs/deploy.md; needs "
        "nbtunnel[scale]): a shared PostgreSQL store, live state on Redis, any edge serves any "
        "tunnel; every edge needs the same CA (ca.pem, ca-key.pem in its state directory)")
    scale.add_argument("--store", default=os.environ.get("NBTUNNEL_STORE"), metavar="URL",
                       help="control-plane store: postgresql://USER[:PASS]@HOST[:PORT]/DB "
                       "(default: SQLite in the state directory; $NBTUNNEL_STORE)")
    scale.add_argument("--presence", default=os.environ.get("NBTUNNEL_PRESENCE"),
                       metavar="URL", help="live state shared by the edges: "
                       "redis://HOST[:PORT]/DB ($NBTUNNEL_PRESENCE)")
    scale.add_argument("--edge-id", default=None, metavar="ID",
                       help="this edge's id (default: LOCATION-random)")
    scale.add_argument("--peer-listen", type=lambda t: host_port(t, 0), default=None,
                       metavar="HOST:PORT", help="UDP address where other edges forward "
                       "requests (default: the --listen host, any port)")
    scale.add_argument("--peer-advertise", default=None, metavar="HOST",
                       help="the address other edges dial for --peer-listen (default: its host)")
    edge.add_argument("--metrics", type=lambda t: host_port(t, 0), default=None,
                      metavar="HOST:PORT", help="serve Prometheus /metrics there (with "
                      "--workers N, worker i uses PORT+i)")
    scale.add_argument("--workers", type=int, default=1, metavar="N",
                       help="edge processes sharing the UDP/TCP ports (SO_REUSEPORT); more than "
                       "1 needs --store postgresql:// and --presence redis://")

    tunnel = sub.add_parser(
        "tunnel", help="run a connector (quick tunnel with --url)",
        description="Publish a local service. By default (--edge auto) on Cloudflare's edge "
        "(a public https://*.trycloudflare.com URL) when it answers within a few seconds, "
        "else on a local edge started in this process.",
    )
    tunnel.add_argument("--url", help="local service: http://localhost:8000, a port number, "
                        "hello_world or http_status:NNN")
    tunnel.add_argument("--hello-world", action="store_true",
                        help="serve the built-in hello world page")
    add_tunnel_arguments(tunnel, cli=True)
    tunnel.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                        help="public front port of the embedded edge (8080; 0 = any)")
    add_control_commands(sub, edge, tunnel)
    from nbtunnel.access.command import EXAMPLES, add_arguments

    access = sub.add_parser(
        "access", help="reach a TCP service a tunnel publishes (like `cloudflared access`)",
        description="Carry a local TCP connection (or stdin/stdout) to a tcp:// or ssh:// "
        "service through the edge, over a WebSocket to its hostname.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(access)
    lab = sub.add_parser("lab", add_help=False, help="the lab: edge, connectors and origin under "
                         "inspection (`nbtunnel lab up|down --help`; needs nbtunnel[lab])")
    lab.add_argument("lab_args", nargs=argparse.REMAINDER)
    return parser


def _run_flags(p: argparse.ArgumentParser, default: Any) -> None:
    """Flags accepted both at tunnel level and after `run` (cloudflared allows both)."""
    p.add_argument("--config", default=default,
                   help="config.yml (cloudflared format; default: $NBTUNNEL_HOME/config.yml, "
                   "~/.cloudflared/config.yml, ...)")
    p.add_argument("--credentials-file", "--cred-file", dest="credentials_file",
                   default=default, help="tunnel credentials file (<TunnelID>.json)")
    p.add_argument("--token", default=default, help="tunnel token (or $TUNNEL_TOKEN)")
    p.add_argument("--metrics", default=default, metavar="HOST:PORT",
                   help="serve /ready, /metrics, /healthcheck, /config, /diag/tunnel")
    if default is S:  # the tunnel parser already has these for quick tunnels
        p.add_argument("--url", default=S,
                       help="serve this one service instead of config.yml's ingress rules")
        p.add_argument("--edge", action="append", type=edge_arg, default=S,
                       metavar="cloudflare|local|auto|HOST:PORT",
                       help="the edge (default: `edge:` in config.yml, $NBTUNNEL_EDGE, "
                       "config.json, else 127.0.0.1:7844 when `nbtunnel edge` was set up on "
                       "this machine, else cloudflare)")
        p.add_argument("--protocol", choices=["quic", "http2", "auto"], default=S,
                       help="transport protocol (quic; auto on Cloudflare's edge)")
        add_cloudflare_arguments(p, S)
        p.add_argument("--cacert", default=S,
                       help="PEM CA for the edge certificate (default for a self-hosted edge: "
                       "$NBTUNNEL_HOME/edge/ca.pem)")
        p.add_argument("--ha-connections", type=int, default=S,
                       help="connections to keep open to the edge (4)")
        p.add_argument("--grace-period", type=duration, default=S,
                       help="time to finish in-flight requests on shutdown (30s)")
        p.add_argument("--quic-backend", choices=["qh3", "aioquic"], default=S,
                       help="QUIC library (default: qh3)")
        p.add_argument("--auth", default=S, metavar="USER:PASSWORD|token",
                       help="protect the public URL: HTTP Basic, or `token` for a random token")


def add_control_commands(sub: Any, edge: argparse.ArgumentParser,
                         tunnel: argparse.ArgumentParser) -> None:
    login = sub.add_parser("login", help="log in to an edge's API and keep the token",
                           description="Check an API token against an edge and save it in "
                           "~/.nbtunnel/login.json (mode 0600).")
    login.add_argument("--api", required=True, help="edge API URL, e.g. http://127.0.0.1:8080")
    login.add_argument("--token", required=True, help="API token (the edge prints its path)")

    esub = edge.add_subparsers(dest="edge_command", metavar="SUBCOMMAND")
    token = esub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="token_command", metavar="ACTION", required=True)
    create = token.add_parser("create", help="create an API token for ACCOUNT (created if new)")
    create.add_argument("account", help="account name")
    create.add_argument("--name", dest="token_name", default="cli",
                        help="a label for the token (cli)")
    create.add_argument("--store", default=S, metavar="URL",
                        help="the edges' PostgreSQL store (default: the state directory's "
                        "SQLite file)")
    status = esub.add_parser("status", help="edges alive, connections per edge, tunnels",
                             description="What the edges of a deployment report through "
                             "Redis (nbtunnel edge --presence redis://... status).")
    status.add_argument("-o", "--output", choices=["json"], help="JSON instead of a table")

    _run_flags(tunnel, None)
    tsub = tunnel.add_subparsers(dest="tunnel_command", metavar="SUBCOMMAND")
    p = tsub.add_parser("create", help="create a named tunnel and write its credentials file")
    p.add_argument("name", help="tunnel name, unique in the account")
    p.add_argument("--secret", help="base64 secret of at least 32 bytes (default: random)")
    p.add_argument("--credentials-file", "--cred-file", dest="credentials_file", default=S,
                   help="where to write the credentials (default: "
                   "$NBTUNNEL_HOME/<TunnelID>.json, mode 0400)")
    p = tsub.add_parser("list", help="list named tunnels")
    p.add_argument("--name", help="only tunnels with this name")
    p.add_argument("-d", "--show-deleted", action="store_true", help="include deleted tunnels")
    p.add_argument("-o", "--output", choices=["json"], help="JSON instead of a table")
    p = tsub.add_parser("info", help="a tunnel and its live connections")
    p.add_argument("tunnel", help="name or id")
    p.add_argument("-o", "--output", choices=["json"], help="JSON instead of text")
    p = tsub.add_parser("delete", help="delete tunnels (refused while connected unless -f)")
    p.add_argument("tunnels", nargs="+", metavar="TUNNEL", help="name or id")
    p.add_argument("-f", "--force", action="store_true",
                   help="delete even while connected (closes the connections)")
    p = tsub.add_parser("cleanup", help="disconnect a tunnel's connectors")
    p.add_argument("tunnels", nargs="+", metavar="TUNNEL", help="name or id")
    p.add_argument("--connector-id", help="only this connector (default: all)")
    p = tsub.add_parser("token", help="print the tunnel token for `run --token`")
    p.add_argument("tunnel", help="name or id")
    p.add_argument("--cred-file", help="write a credentials file instead of printing")
    route = tsub.add_parser("route", help="route hostnames to tunnels").add_subparsers(
        dest="route_command", metavar="KIND", required=True)
    p = route.add_parser("dns", help="route HOSTNAME to TUNNEL")
    p.add_argument("tunnel", help="name or id")
    p.add_argument("hostname", help="e.g. app.localhost (resolves to this machine)")
    p.add_argument("--overwrite-dns", action="store_true",
                   help="take the hostname over if another tunnel has it")
    route.add_parser("list", help="list routes")
    p = route.add_parser("delete", help="remove a route")
    p.add_argument("hostname", help="the routed hostname")
    p = tsub.add_parser("run", help="run a named tunnel",
                        description="Run a named tunnel: credentials from --token, "
                        "--credentials-file or TUNNEL's <TunnelID>.json; ingress from "
                        "--url or config.yml (--config; default: config.yml in $NBTUNNEL_HOME, "
                        "then where cloudflared looks: ~/.cloudflared, /etc/cloudflared, ...).")
    p.add_argument("tunnel", nargs="?", help="name or id (default: `tunnel:` in config.yml)")
    _run_flags(p, S)
    ingress = tsub.add_parser("ingress", help="check config.yml ingress rules").add_subparsers(
        dest="ingress_command", metavar="ACTION", required=True)
    p = ingress.add_parser("validate", help="validate the ingress rules")
    p.add_argument("--json", help="validate this configuration JSON instead")
    p = ingress.add_parser("rule", help="which rule matches URL")
    p.add_argument("url", help="e.g. https://app.example.com/path")



