"""`nbtunnel ...`: parse the command line and run what it names.

No logic lives here: `parser.py` builds the parser, `run_edge.py` / `run_quick.py` /
`run_named.py` run an edge or a connector until a signal, `manage.py` holds the control-plane
commands (thin wrappers over the edge's REST API).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from nbtunnel.api.errors import TargetError
from nbtunnel.api.options import OptionError, options_from_args
from nbtunnel.api.targets import normalize_target
from nbtunnel.cli.logs import setup_logging
from nbtunnel.cli.parser import build_parser
from nbtunnel.cli.serve import run_with_signals


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "lab":  # the lab is a separate package: imported only when asked for
        return _run_lab([*args.lab_args, *extra])
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging(args.loglevel, args.log_format)
    if os.environ.get("NBTUNNEL_MEMDEBUG"):  # a leak hunt: its imports only then
        from nbtunnel.cli.memdebug import install_from_env

        install_from_env()
    code = dispatch(parser, args)
    if code is not None:
        return code if isinstance(code, int) else run_with_signals(code)
    if args.command == "tunnel":
        if not args.url and not args.hello_world:
            parser.error("tunnel: give --url URL (or --hello-world)")
        if (args.grace_period or 0) > 180:
            parser.error("--grace-period must be at most 3m")
        if args.ha_connections is not None and args.ha_connections < 1:
            parser.error("--ha-connections must be at least 1")
        if args.url:
            try:
                normalize_target(args.url)
            except TargetError as exc:
                parser.error(f"--url: {exc}")
        try:
            options_from_args(args, edge=None, inspect=False).check()
        except OptionError as exc:
            parser.error(str(exc))
    if args.command == "access":
        from nbtunnel.access.command import runner

        return run_with_signals(runner(args))
    if args.command == "edge":
        if len(args.https_cert) != len(args.https_key):
            parser.error("give one --https-key per --https-cert")
        if (args.https_cert or args.https_redirect) and args.https is None:
            parser.error("--https-cert/--https-key/--https-redirect need --https HOST:PORT")
        from nbtunnel.cli.workers import WORKER_ENV, check_workers, run_workers

        problem = check_workers(args)
        if problem:
            parser.error(problem)
        if args.workers > 1 and WORKER_ENV not in os.environ:
            return run_workers(args, sys.argv[1:] if argv is None else argv)
        from nbtunnel.cli.run_edge import run_edge

        return run_with_signals(run_edge(args))
    from nbtunnel.cli.run_quick import run_quick_tunnel

    return run_with_signals(run_quick_tunnel(args))


def _run_lab(argv: list[str]) -> int:
    import importlib

    try:
        lab_cli = importlib.import_module("nbtunnel_lab.cli")
    except ImportError as exc:
        print(f"nbtunnel lab: the lab is not installed ({exc}); pip install 'nbtunnel[lab]'",
              file=sys.stderr)
        return 2
    return int(lab_cli.main(argv))


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """None: not a control command (the caller runs the quick tunnel or the edge); an int:
    the exit code; otherwise a runner for `run_with_signals`."""
    from nbtunnel.cli import manage as c

    if args.command == "login":
        return c.run_command(c.cmd_login, args)
    if args.command == "edge" and getattr(args, "edge_command", None) == "token":
        return c.run_command(c.cmd_edge_token_create, args)
    if args.command == "edge" and getattr(args, "edge_command", None) == "status":
        from nbtunnel.cli.edge_status import cmd_edge_status

        return c.run_command(cmd_edge_status, args)
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
        from nbtunnel.cli.run_named import ingress_command

        return ingress_command(args)
    if cmd == "run":
        if (getattr(args, "grace_period", 0) or 0) > 180:
            parser.error("--grace-period must be at most 3m")
        from nbtunnel.cli.run_named import run_named

        return run_named(args)
    return None

