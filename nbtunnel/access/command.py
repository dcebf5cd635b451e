"""`nbtunnel access tcp|ssh`: the flags and what they run (also `python -m nbtunnel.access`).

Flags follow `cloudflared access`: `--hostname`, `--url` (the local listener), `--destination`
(bastion). For a self-hosted edge: `--edge-address HOST:PORT` dials there while SNI and Host stay
the hostname, `--edge-ca FILE` trusts the edge's CA, `--insecure` trusts anything. stdout is the
data channel of `access ssh`, so messages go to stderr only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from nbtunnel.access.target import AccessError, AccessTarget, parse_host_port

log = logging.getLogger("nbtunnel.access")

EXAMPLES = """examples:
  nbtunnel access tcp --hostname db.example.com --url 127.0.0.1:5432
  ssh -o ProxyCommand='nbtunnel access ssh --hostname %h' user@ssh.example.com
  nbtunnel access tcp --hostname h.localhost --url 127.0.0.1:2222 \\
      --edge-address 127.0.0.1:8443 --edge-ca ~/.nbtunnel/edge/ca.pem
"""


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME: VALUE, got {text!r}")
    return name.strip(), value.strip()


def add_arguments(access: argparse.ArgumentParser) -> None:
    """The `access` command's subcommands (tcp, ssh) on an existing parser."""
    sub = access.add_subparsers(dest="access_command", metavar="KIND", required=True)
    for kind, helptext in (
        ("tcp", "listen on --url and carry each connection to the hostname"),
        ("ssh", "carry stdin/stdout (OpenSSH ProxyCommand), or listen with --url"),
        ("rdp", "as tcp (for RDP clients)"),
        ("smb", "as tcp (for SMB clients)"),
    ):
        p = sub.add_parser(kind, help=helptext, description=helptext + ".", epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--hostname", required=True,
                       help="the hostname the tunnel serves (or an https:// / http:// URL)")
        p.add_argument("--url", required=kind != "ssh", metavar="HOST:PORT",
                       help="local address to listen on (e.g. 127.0.0.1:2222)")
        p.add_argument("--destination", help="bastion: the host:port the connector should "
                       "dial (Cf-Access-Jump-Destination)")
        p.add_argument("--edge-address", metavar="HOST:PORT",
                       help="dial this address instead of resolving the hostname (SNI and Host "
                       "stay the hostname): a self-hosted edge's HTTPS front")
        p.add_argument("--edge-ca", metavar="FILE",
                       help="PEM CA that signs the edge certificate (nbtunnel edge prints it)")
        p.add_argument("--insecure", action="store_true",
                       help="do not verify the edge certificate (testing only)")
        p.add_argument("--header", action="append", type=_header, default=[],
                       metavar="'NAME: VALUE'", help="extra request header (repeatable)")
        p.add_argument("--connect-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="deadline for reaching the edge and upgrading (30)")


def target_of(args: argparse.Namespace) -> AccessTarget:
    return AccessTarget.parse(
        args.hostname, edge_address=args.edge_address, edge_ca=args.edge_ca,
        insecure=args.insecure, destination=args.destination, headers=tuple(args.header),
        connect_timeout=args.connect_timeout)


def runner(args: argparse.Namespace) -> Callable[[asyncio.Event], Awaitable[int]]:
    """What `nbtunnel access ...` runs until `stop` is set; returns an exit status."""

    async def run(stop: asyncio.Event) -> int:
        from nbtunnel.access.forward import Forwarder, run_stdio

        try:
            target = target_of(args)
            if args.url is None:
                stdio = asyncio.ensure_future(run_stdio(target))
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait([stdio, stopper], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stdio.cancel()
                    stopper.cancel()
                    outcome = (await asyncio.gather(stdio, stopper, return_exceptions=True))[0]
                if isinstance(outcome, AccessError):
                    raise outcome
                return 0
            host, port = parse_host_port(args.url, 0, any_port=True)
            forwarder = Forwarder(target)
            await forwarder.start(host, port)
            try:
                bound = forwarder.sockname
                print(f"nbtunnel access: listening on {bound[0]}:{bound[1]}, carrying each "
                      f"connection to {target.url}"
                      + (f" via {target.dial[0]}:{target.dial[1]}" if target.edge_address
                         else ""), file=sys.stderr, flush=True)
                await stop.wait()
            finally:
                await forwarder.close()
            return 0
        except AccessError as exc:
            print(f"nbtunnel access: {exc}", file=sys.stderr, flush=True)
            return 1

    return run


def main(argv: list[str] | None = None) -> int:
    """`python -m nbtunnel.access tcp|ssh ...` (the same as `nbtunnel access ...`)."""
    parser = argparse.ArgumentParser(prog="nbtunnel access",
                                     description="Reach a TCP service published by a tunnel.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await runner(args)(stop)

    try:
        return asyncio.run(wrapper())
    except KeyboardInterrupt:
        return 130
