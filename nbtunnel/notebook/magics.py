"""`%tunnel`: open, list, stop and inspect tunnels from a notebook cell.

Argument parsing is IPython's magic_arguments (argparse), so `%tunnel?` shows the real help and
a bad argument is a `UsageError` (one red line, no traceback). The magic returns the `Tunnel`
(`t = %tunnel 8888`) and displays its widget once; a repeat shows the existing tunnel.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from nbtunnel.api.edges import resolve_edge
from nbtunnel.api.errors import EdgeConfigError, TargetError, TunnelError
from nbtunnel.api.open import open_tunnel
from nbtunnel.api.registry import find_tunnel, list_tunnels, stop_all
from nbtunnel.api.targets import normalize_target
from nbtunnel.api.tunnel import Tunnel
from nbtunnel.core.errors import NbtunnelError

COMMANDS = ("list", "stop", "status")


@magics_class
class TunnelMagics(Magics):
    """Holds the tunnels shown in the current cell (so a returned Tunnel is not shown twice)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.shown: dict[int, Tunnel] = {}

    def post_run_cell(self, result: Any = None) -> None:
        for t in self.shown.values():
            t._views.pop("suppress_widget", None)
        self.shown.clear()

    @magic_arguments()
    @argument("words", nargs="*", metavar="TARGET | list | stop WHAT | status",
              help="a port (8888), a URL (http://localhost:8888), hello_world or "
              "http_status:NNN to open a tunnel; `list`; `stop PORT|URL|all`; `status`")
    @argument("--edge", metavar="HOST:PORT",
              help="edge to connect to (default: $NBTUNNEL_EDGE, the `edge` of "
              "$NBTUNNEL_HOME/config.json, else an embedded local edge in this kernel)")
    @argument("--cacert", help="PEM CA that signs the edge certificate")
    @argument("--quick-service", metavar="URL", help="quick-tunnel API base URL "
              "(default: http://EDGE_HOST:8080)")
    @argument("--ha-connections", type=int, default=4, metavar="N",
              help="connections to keep open to the edge (4)")
    @argument("--protocol", default="quic", choices=["quic", "auto"],
              help="transport protocol (quic)")
    @argument("--timeout", type=float, default=30.0, metavar="S",
              help="seconds to wait for the first registered connection (30)")
    @line_magic
    def tunnel(self, line: str) -> Tunnel | None:
        """Publish a local service through a Cloudflare-style quick tunnel.

        Examples:
          %tunnel 8888                  open a tunnel to http://localhost:8888
          t = %tunnel hello_world       the built-in hello world page; t is the Tunnel
          %tunnel list                  the tunnels of this kernel
          %tunnel status                their connections and counters
          %tunnel stop 8888             stop one (by port, target URL or public URL)
          %tunnel stop all              stop all, close the embedded edge and its thread
        """
        args = parse_argstring(self.tunnel, line)
        words: list[str] = args.words
        if not words:
            raise UsageError("%tunnel needs a target (a port, URL, hello_world) or one of "
                             "list, stop, status; see %tunnel?")
        command = words[0]
        if command in COMMANDS:
            self._command(command, words[1:])
            return None
        if len(words) > 1:
            raise UsageError(f"%tunnel takes one target, got {' '.join(words)!r}")
        return self._open(command, args)

    def _open(self, target: str, args: Any) -> Tunnel:
        try:
            normalize_target(target)
            settings = resolve_edge(args.edge, args.cacert, args.quick_service)
        except (TargetError, EdgeConfigError) as exc:
            raise UsageError(str(exc)) from None
        if args.ha_connections < 1:
            raise UsageError("--ha-connections must be at least 1")
        existing = find_tunnel(target)
        try:
            tunnel = open_tunnel(target, edge=args.edge, cacert=args.cacert,
                                 quick_service=args.quick_service,
                                 ha_connections=args.ha_connections, protocol=args.protocol,
                                 timeout=args.timeout)
        except TunnelError as exc:
            raise UsageError(f"could not open the tunnel: {exc}") from None
        if existing is tunnel:
            print(f"nbtunnel: the tunnel to {tunnel.service} is already open: {tunnel.url}")
        else:
            print(f"nbtunnel: using {tunnel.edge_label}"
                  + ("" if settings.edge else "; set --edge or NBTUNNEL_EDGE for another edge"))
            from nbtunnel.notebook.hosted import attach_hosted_url

            attach_hosted_url(tunnel)
        self.show(tunnel)
        return tunnel

    def show(self, tunnel: Tunnel) -> None:
        """Display the widget (or text) once per cell; the returned value then shows text."""
        if id(tunnel) not in self.shown:
            self.shown[id(tunnel)] = tunnel
            display(tunnel)
            tunnel._views["suppress_widget"] = True

    def _command(self, command: str, rest: list[str]) -> None:
        tunnels = list_tunnels()
        if command == "list":
            if rest:
                raise UsageError("%tunnel list takes no arguments")
            if not tunnels:
                print("nbtunnel: no tunnels open")
            for t in tunnels:
                up = sum(1 for c in t.connections if c.state == "registered")
                print(f"{t.url}  ->  {t.service}  [{t.status}, {up}/{len(t.connections)} "
                      f"connections]")
            return
        if command == "status":
            if rest:
                raise UsageError("%tunnel status takes no arguments")
            if not tunnels:
                print("nbtunnel: no tunnels open")
            for t in tunnels:
                print(t.summary())
                for c in t.connections:
                    print(f"    #{c.index} {c.state:<12} {c.location or '-':<6} {c.protocol} "
                          f"{c.edge} {c.connection_id}")
            return
        if len(rest) != 1:
            raise UsageError("usage: %tunnel stop PORT|URL|all")
        what = rest[0]
        if what == "all":
            stop_all()
            print(f"nbtunnel: stopped {len(tunnels)} tunnel(s) and the nbtunnel loop thread")
            return
        tunnel = find_tunnel(what)
        if tunnel is None:
            running = ", ".join(f"{t.service} ({t.url})" for t in tunnels) or "none"
            raise UsageError(f"no tunnel for {what!r}; running: {running}")
        try:
            tunnel.stop()
        except NbtunnelError as exc:
            raise UsageError(f"could not stop {tunnel.url}: {exc}") from None
        print(f"nbtunnel: stopped {tunnel.url}")
