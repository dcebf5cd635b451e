"""`--edge cloudflare|local|auto|HOST:PORT` for the CLI: parsing, precedence, Cloudflare's edge.

Precedence (as the Python API's `resolve_edge`): the flag, then `edge:` in config.yml (named
tunnels), then `$NBTUNNEL_EDGE`, then `edge` in `$NBTUNNEL_HOME/config.json`, then the
command's default: `auto` for quick tunnels. Several HOST:PORT values are allowed (a
self-hosted edge with several addresses); a keyword stands alone.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any

from nbtunnel.api.edges import DEFAULT_EDGE_PORT, config_path, read_config
from nbtunnel.api.options import edge_arg
from nbtunnel.connector.cloudflare import (
    AUTO_BUDGET,
    CloudflareEdge,
    CloudflareOptions,
    CloudflareUnavailable,
    fallback_line,
    find_edge,
)
from nbtunnel.connector.discovery import DnsOptions
from nbtunnel.connector.quick import CLOUDFLARE_QUICK_SERVICE
from nbtunnel.core.errors import NbtunnelError

log = logging.getLogger("nbtunnel")

EdgeValue = str | tuple[str, int]
@dataclass(frozen=True)
class EdgeChoice:
    kind: str  # "auto", "cloudflare", "local" or "address"
    addresses: tuple[tuple[str, int], ...]
    source: str


def choose_edge(values: list[EdgeValue] | None, config_value: Any = None,
                default: str = "auto") -> EdgeChoice:
    """The flag's values, else config.yml's `edge`, else $NBTUNNEL_EDGE, else config.json."""
    source = "--edge"
    raw: list[Any] = list(values or [])
    if not raw and config_value:
        raw, source = (config_value if isinstance(config_value, list)
                       else str(config_value).split(",")), "config.yml"
    if not raw and os.environ.get("NBTUNNEL_EDGE"):
        raw, source = os.environ["NBTUNNEL_EDGE"].split(","), "NBTUNNEL_EDGE"
    if not raw:
        raw, source = _config_json_edge(), str(config_path())
    if not raw:
        raw, source = [default], "default"  # a keyword, or HOST:PORT (a named tunnel's)
    try:
        parsed = [v if isinstance(v, tuple) else edge_arg(str(v)) for v in raw]
    except argparse.ArgumentTypeError as exc:
        raise NbtunnelError(f"edge from {source}: {exc}") from exc
    kinds = [v for v in parsed if isinstance(v, str)]
    if kinds:
        if len(parsed) > 1:
            raise NbtunnelError(f"--edge {kinds[0]} stands alone (from {source}), got "
                                f"{len(parsed)} values")
        return EdgeChoice(kinds[0], (), source)
    return EdgeChoice("address", tuple(v for v in parsed if isinstance(v, tuple)), source)


def _config_json_edge() -> list[str]:
    value = read_config().get("edge")
    return str(value).split(",") if value else []


def cloudflare_options(args: argparse.Namespace, region: str | None = None) -> CloudflareOptions:
    """Cloudflare settings from the flags that exist on this command."""
    return CloudflareOptions(
        region=getattr(args, "region", None) or region or None,
        ip_version=getattr(args, "edge_ip_version", None) or "auto",
        cacert=getattr(args, "cacert", None),
        quick_service=getattr(args, "quick_service", None) or CLOUDFLARE_QUICK_SERVICE,
        dns=DnsOptions.from_env(),
        user_agent=getattr(args, "user_agent", None))


async def named_edge(choice: EdgeChoice, options: CloudflareOptions
                     ) -> tuple[CloudflareEdge | None, EdgeChoice]:
    """For a named tunnel: Cloudflare's discovered edge, or (auto failing) the self-hosted
    default 127.0.0.1:7844 after one line saying why."""
    if choice.kind not in ("cloudflare", "auto"):
        return None, choice
    try:
        edge = await find_edge(options, *(() if choice.kind == "cloudflare" else (AUTO_BUDGET,)))
    except NbtunnelError as exc:
        if choice.kind == "cloudflare":
            raise CloudflareUnavailable(f"cannot use Cloudflare's edge: {exc}") from exc
        log.warning("%s", fallback_line(exc, f"using the self-hosted edge at 127.0.0.1:"
                                             f"{DEFAULT_EDGE_PORT}"))
        return None, EdgeChoice("address", (("127.0.0.1", DEFAULT_EDGE_PORT),), "default")
    log.info("Edge discovery: %s", edge.describe())
    return edge, choice
