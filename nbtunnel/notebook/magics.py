"""`%tunnel`: open, list, stop and inspect tunnels from a notebook cell.

The options are the CLI's (`nbtunnel.api.options`, one argparse definition for both), so
`%tunnel?` shows the real help and a bad argument is a `UsageError` (one red line, no
traceback). The magic returns the `Tunnel`
(`t = %tunnel 8888`) and displays its widget once; a repeat shows the existing tunnel.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from nbtunnel.api.edges import resolve_edge
from nbtunnel.api.errors import EdgeConfigError, TargetError, TunnelError
from nbtunnel.api.open import open_tunnel
from nbtunnel.api.options import OptionError, add_tunnel_arguments, options_from_args
from nbtunnel.api.registry import find_tunnel, list_tunnels, stop_all
from nbtunnel.api.targets import normalize_target
from nbtunnel.api.tunnel import Tunnel
from nbtunnel.core.errors import NbtunnelError

COMMANDS = ("list", "stop", "status")
EXAMPLES = """Examples:
  %tunnel 8888                  open a tunnel to http://localhost:8888 (a Jupyter server there
                                is recognised: Host and Origin are set as it requires); on
                                Cloudflare's edge (public https URL) if it answers, else local
  %tunnel 8888 --edge cloudflare  insist on Cloudflare (https://<words>.trycloudflare.com)
  %tunnel 8888 --edge local     an edge in this kernel: the URL works on this machine only
  %tunnel 8888 --token eyJh...  a named tunnel from your Cloudflare account
  t = %tunnel hello_world       the built-in hello world page; t is the Tunnel
  %tunnel ssh 22                this machine's SSH server as a TCP service (prints the
                                nbtunnel/cloudflared access commands and an ssh stanza)
  %tunnel 8000 --auth token     a random token guards the public URL (shown once)
  %tunnel 8000 --auth me:secret HTTP Basic at the public URL
  %tunnel list                  the tunnels of this kernel
  %tunnel status                their connections and counters
  %tunnel stop PORT|URL|all     stop one (by port, target URL or public URL); `all` also
                                closes the embedded edge and nbtunnel's thread
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors (one red line in a notebook, no traceback)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%tunnel: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or "%tunnel: see %tunnel?")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%tunnel", add_help=False, epilog=EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Publish a local service through a quick tunnel on Cloudflare's edge "
                "(or a local or self-hosted one).")
    p.add_argument("words", nargs="*", metavar="TARGET | tcp PORT | list | stop WHAT | status",
                   help="a port (8888), HOST:PORT, a URL (http://localhost:8888), hello_world "
                   "or http_status:NNN to open a tunnel; `tcp PORT`, `ssh PORT` (or "
                   "tcp://host:port) for a TCP service; `list`; `stop PORT|URL|all`; `status`")
    add_tunnel_arguments(p, cli=False)
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the first registered connection (30)")
    return p


PARSER = build_parser()
STREAM_KINDS = ("tcp", "ssh", "rdp", "smb")  # `%tunnel ssh 22`: a TCP service


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

    def display_tunnel(self, tunnel: Tunnel) -> None:
        """IPython's display hook for a Tunnel: nothing if the magic already showed it in
        this cell (so `%tunnel 8888` alone prints no stray line), else its panel."""
        if tunnel._views.get("suppress_widget"):
            return
        bundle = tunnel._repr_mimebundle_()
        if "application/vnd.jupyter.widget-view+json" in bundle:
            from nbtunnel.notebook.snapshot import show_panel

            show_panel(tunnel, bundle)  # a static copy first, for a kernel-less reopen
        else:
            display(bundle, raw=True)

    @line_magic
    def tunnel(self, line: str) -> Tunnel | None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%tunnel: {exc}") from None
        args = PARSER.parse_args(words)
        targets: list[str] = args.words
        if not targets:
            raise UsageError("%tunnel needs a target (a port, URL, hello_world) or one of "
                             "list, stop, status; see %tunnel?")
        command = targets[0]
        if command in COMMANDS:
            self._command(command, targets[1:])
            return None
        if command in STREAM_KINDS and len(targets) == 2:  # %tunnel tcp 22, %tunnel ssh 22
            where = targets[1]
            targets = [f"{command}://{'localhost:' + where if where.isdigit() else where}"]
        return self._open(targets, args)

    tunnel.__doc__ = PARSER.format_help()

    def _open(self, targets: list[str], args: Any) -> Tunnel:
        """One target, or several on one connector (`%tunnel 8888 8050`)."""
        try:
            for target in targets:
                normalize_target(target)
            opts = options_from_args(args).check()
            settings = resolve_edge(opts.edge, opts.cacert, opts.quick_service, opts.region)
        except (TargetError, OptionError, EdgeConfigError) as exc:
            raise UsageError(str(exc)) from None
        existing = find_tunnel(targets[0])
        try:
            what: str | list[int | str] = targets[0] if len(targets) == 1 else [*targets]
            tunnel = open_tunnel(what, **opts.__dict__)
        except TunnelError as exc:
            raise UsageError(f"could not open the tunnel: {exc}") from None
        if existing is tunnel:
            print(f"nbtunnel: the tunnel to {tunnel.service} is already open: {tunnel.url}")
        else:
            # (open_tunnel printed why `auto` could not use Cloudflare, if it could not)
            print(f"nbtunnel: using {tunnel.edge_label}"
                  + ("" if settings.kind in ("address", "cloudflare")
                     else "; set --edge or NBTUNNEL_EDGE for another edge"))
            print(f"nbtunnel: {tunnel.url or 'named tunnel'}: {tunnel.reach}")
            for note in tunnel.notes:
                print(f"nbtunnel: {note}")
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
