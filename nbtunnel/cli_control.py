"""The control-plane part of the command line, grafted onto `cli.py`'s parser.

`nbtunnel login`, `nbtunnel edge token create`, and cloudflared's `tunnel` subcommands
(create, list, info, delete, cleanup, token, route, run, ingress). `nbtunnel tunnel --url X`
(no subcommand) stays the quick tunnel: these subparsers are optional.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

S = argparse.SUPPRESS


def _run_flags(p: argparse.ArgumentParser, default: Any) -> None:
    """Flags accepted both at tunnel level and after `run` (cloudflared allows both)."""
    from nbtunnel.cli import duration, host_port

    p.add_argument("--config", default=default, help="config.yml (cloudflared format)")
    p.add_argument("--credentials-file", "--cred-file", dest="credentials_file",
                   default=default, help="tunnel credentials file (<TunnelID>.json)")
    p.add_argument("--token", default=default, help="tunnel token (or $TUNNEL_TOKEN)")
    p.add_argument("--metrics", default=default, metavar="HOST:PORT",
                   help="serve /ready, /metrics, /healthcheck, /config, /diag/tunnel")
    if default is S:  # the tunnel parser already has these for quick tunnels
        p.add_argument("--url", default=S)
        p.add_argument("--edge", action="append", type=host_port, default=S,
                       metavar="HOST:PORT")
        p.add_argument("--cacert", default=S)
        p.add_argument("--ha-connections", type=int, default=S)
        p.add_argument("--grace-period", type=duration, default=S)
        p.add_argument("--quic-backend", choices=["qh3", "aioquic"], default=S)


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
    create.add_argument("account")
    create.add_argument("--name", dest="token_name", default="cli")

    _run_flags(tunnel, None)
    tsub = tunnel.add_subparsers(dest="tunnel_command", metavar="SUBCOMMAND")
    p = tsub.add_parser("create", help="create a named tunnel and write its credentials file")
    p.add_argument("name")
    p.add_argument("--secret", help="base64 secret of at least 32 bytes (default: random)")
    p.add_argument("--credentials-file", "--cred-file", dest="credentials_file", default=S)
    p = tsub.add_parser("list", help="list named tunnels")
    p.add_argument("--name")
    p.add_argument("-d", "--show-deleted", action="store_true")
    p.add_argument("-o", "--output", choices=["json"])
    p = tsub.add_parser("info", help="a tunnel and its live connections")
    p.add_argument("tunnel")
    p.add_argument("-o", "--output", choices=["json"])
    p = tsub.add_parser("delete", help="delete tunnels (refused while connected unless -f)")
    p.add_argument("tunnels", nargs="+", metavar="TUNNEL")
    p.add_argument("-f", "--force", action="store_true")
    p = tsub.add_parser("cleanup", help="disconnect a tunnel's connectors")
    p.add_argument("tunnels", nargs="+", metavar="TUNNEL")
    p.add_argument("--connector-id")
    p = tsub.add_parser("token", help="print the tunnel token for `run --token`")
    p.add_argument("tunnel")
    p.add_argument("--cred-file", help="write a credentials file instead of printing")
    route = tsub.add_parser("route", help="route hostnames to tunnels").add_subparsers(
        dest="route_command", metavar="KIND", required=True)
    p = route.add_parser("dns", help="route HOSTNAME to TUNNEL")
    p.add_argument("tunnel")
    p.add_argument("hostname")
    p.add_argument("--overwrite-dns", action="store_true")
    route.add_parser("list", help="list routes")
    p = route.add_parser("delete", help="remove a route")
    p.add_argument("hostname")
    p = tsub.add_parser("run", help="run a named tunnel")
    p.add_argument("tunnel", nargs="?")
    _run_flags(p, S)
    ingress = tsub.add_parser("ingress", help="check config.yml ingress rules").add_subparsers(
        dest="ingress_command", metavar="ACTION", required=True)
    p = ingress.add_parser("validate", help="validate the ingress rules")
    p.add_argument("--json", help="validate this configuration JSON instead")
    p = ingress.add_parser("rule", help="which rule matches URL")
    p.add_argument("url")


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """None: not a control command (the caller runs the quick tunnel or the edge); an int:
    the exit code; otherwise a runner for `_run_with_signals`."""
    from nbtunnel import control_cli as c

    if args.command == "login":
        return c.run_command(c.cmd_login, args)
    if args.command == "edge" and getattr(args, "edge_command", None) == "token":
        return c.run_command(c.cmd_edge_token_create, args)
    if args.command != "tunnel" or getattr(args, "tunnel_command", None) is None:
        return None
    cmd = args.tunnel_command
    if cmd in c.COMMANDS:
        return c.run_command(c.COMMANDS[cmd], args)
    if cmd == "route":
        func = {"dns": c.cmd_route_dns, "list": c.cmd_route_list,
                "delete": c.cmd_route_delete}[args.route_command]
        return c.run_command(func, args)
    if cmd == "ingress":
        from nbtunnel.named import ingress_command

        return ingress_command(args)
    if cmd == "run":
        if getattr(args, "grace_period", 0) > 180:
            parser.error("--grace-period must be at most 3m")
        from nbtunnel.named import run_named

        return run_named(args)
    return None


__all__ = ["Path", "add_control_commands", "dispatch"]
