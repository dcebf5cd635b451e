"""Command line: `nbtunnel edge`, `nbtunnel tunnel --url URL`, `nbtunnel --version`.

Flags mirror cloudflared's where they exist (`--url`, `--edge`, `--cacert`, `--quick-service`,
`--ha-connections`, `--protocol`, `--grace-period`). No logic lives here: it parses, builds
configs and runs the edge or connector objects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

from nbtunnel import __version__
from nbtunnel.logs import setup_logging

DEFAULT_EDGE_PORT = 7844
DEFAULT_HTTP_PORT = 8080


def duration(text: str) -> float:
    """Go-style durations ("30s", "1m30s", "500ms") or plain seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30s, 1m, 500ms)")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def host_port(text: str, default_port: int = DEFAULT_EDGE_PORT) -> tuple[str, int]:
    m = re.fullmatch(r"\[?([^\]]*?)\]?(?::(\d+))?", text.strip())
    if not m or not m.group(1):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return m.group(1), int(m.group(2) or default_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbtunnel",
        description="A pure-Python Cloudflare Tunnel: publish a local service through an "
        "outbound connection to an edge (a local one by default).",
        epilog="Quick start: `nbtunnel tunnel --url hello_world` starts a local edge in-process "
        "and prints a public URL for the built-in hello world page.",
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
                      metavar="HOST:PORT", help="UDP address for connectors (127.0.0.1:7844)")
    edge.add_argument("--http", type=lambda t: host_port(t, DEFAULT_HTTP_PORT),
                      default=("127.0.0.1", DEFAULT_HTTP_PORT), metavar="HOST:PORT",
                      help="public HTTP front and API (127.0.0.1:8080)")
    edge.add_argument("--domain", default="localhost",
                      help="domain for quick-tunnel hostnames (localhost: *.localhost resolves "
                      "to loopback)")
    edge.add_argument("--state-dir", type=Path, default=None,
                      help="where the CA, certificates and tunnel store live "
                      "(~/.nbtunnel/edge, or $NBTUNNEL_HOME/edge)")
    edge.add_argument("--location", default="LOC", help="location name sent to connectors")
    edge.add_argument("--quic-backend", choices=["qh3", "aioquic"], default=None,
                      help="QUIC library (default: qh3)")

    tunnel = sub.add_parser(
        "tunnel", help="run a connector (quick tunnel with --url)",
        description="Publish a local service. Without --edge (or $NBTUNNEL_EDGE) a local edge "
        "is started in this process.",
    )
    tunnel.add_argument("--url", help="local service: http://localhost:8000, a port number, "
                        "hello_world or http_status:NNN")
    tunnel.add_argument("--hello-world", action="store_true",
                        help="serve the built-in hello world page")
    tunnel.add_argument("--edge", action="append", type=host_port, metavar="HOST:PORT",
                        help="edge address (repeatable; default: $NBTUNNEL_EDGE or an embedded "
                        "local edge)")
    tunnel.add_argument("--cacert", help="PEM CA that signs the edge certificate")
    tunnel.add_argument("--quick-service", help="quick-tunnel API base URL "
                        "(default: http://EDGE_HOST:8080)")
    tunnel.add_argument("--ha-connections", type=int, default=4,
                        help="connections to keep open to the edge (4)")
    tunnel.add_argument("--protocol", default="quic", choices=["quic", "http2", "auto"],
                        help="transport protocol (quic; auto falls back to http2)")
    tunnel.add_argument("--grace-period", type=duration, default=30.0,
                        help="time to finish in-flight requests on shutdown (30s, max 3m)")
    tunnel.add_argument("--quic-backend", choices=["qh3", "aioquic"], default=None,
                        help="QUIC library (default: qh3)")
    tunnel.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                        help="public front port of the embedded edge (8080; 0 = any)")
    from nbtunnel.cli_control import add_control_commands

    add_control_commands(sub, edge, tunnel)
    lab = sub.add_parser("lab", add_help=False, help="the lab: edge, connectors and origin under "
                         "inspection (`nbtunnel lab up|down --help`; needs nbtunnel[lab])")
    lab.add_argument("lab_args", nargs=argparse.REMAINDER)
    return parser


def normalize_url(url: str) -> str:
    if url.isdigit():
        return f"http://localhost:{url}"
    if url in ("hello_world", "hello-world") or url.startswith(("http_status:", "unix:")):
        return url
    if "://" not in url:
        return "http://" + url
    return url


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
    from nbtunnel.cli_control import dispatch

    code = dispatch(parser, args)
    if code is not None:
        return code if isinstance(code, int) else _run_with_signals(code)
    if args.command == "tunnel":
        if not args.url and not args.hello_world:
            parser.error("tunnel: give --url URL (or --hello-world)")
        if args.grace_period > 180:
            parser.error("--grace-period must be at most 3m")
        if args.ha_connections < 1:
            parser.error("--ha-connections must be at least 1")
    from nbtunnel.runner import run_edge, run_tunnel

    runner = run_edge(args) if args.command == "edge" else run_tunnel(args)
    return _run_with_signals(runner)


def _run_lab(argv: list[str]) -> int:
    import importlib

    try:
        lab_cli = importlib.import_module("nbtunnel_lab.cli")
    except ImportError as exc:
        print(f"nbtunnel lab: the lab is not installed ({exc}); pip install 'nbtunnel[lab]'",
              file=sys.stderr)
        return 2
    return int(lab_cli.main(argv))


def _run_with_signals(coro: object) -> int:
    """Run until done; first SIGINT/SIGTERM asks for a graceful stop, a second one exits."""

    async def wrapper() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        hits = 0

        def on_signal() -> None:
            nonlocal hits
            hits += 1
            if hits > 1:
                os._exit(1)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal)
        return await coro(stop)  # type: ignore[operator]

    try:
        return asyncio.run(wrapper())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
