"""`warp-routing`: whether this connector serves private-network TCP streams (`type = tcp`).

cloudflared takes `warp-routing: {connectTimeout, tcpKeepAlive, maxActiveFlows}` from config.yml
or the remote configuration, and Cloudflare's dashboard decides whether the tunnel gets private
traffic at all. A self-hosted edge has no such switch, so nbtunnel asks for `enabled: true`:
without it a `type = tcp` stream is refused with a clear error instead of dialing whatever
address the edge names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbtunnel.core.errors import NbtunnelError

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_TCP_KEEPALIVE = 30.0


class WarpRoutingError(NbtunnelError):
    """A warp-routing section that cannot be used; the message names the key."""


@dataclass(frozen=True)
class WarpRouting:
    enabled: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    tcp_keep_alive: float = DEFAULT_TCP_KEEPALIVE
    max_active_flows: int = 0  # 0 = no limit
    raw: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, raw: object, parse_duration: Any) -> WarpRouting:
        """From config.yml (Go durations) or remote JSON (seconds); `None` means defaults."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise WarpRoutingError("warp-routing must be a mapping")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            where = f"warp-routing.{key}"
            if key == "enabled":
                if not isinstance(value, bool):
                    raise WarpRoutingError(f"{where} must be true or false, got {value!r}")
                values["enabled"] = value
            elif key == "connectTimeout":
                values["connect_timeout"] = parse_duration(value, where)
            elif key == "tcpKeepAlive":
                values["tcp_keep_alive"] = parse_duration(value, where)
            elif key in ("maxActiveFlows", "MaxActiveFlows"):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise WarpRoutingError(f"{where} must be a non-negative integer")
                values["max_active_flows"] = value
        return cls(**values, raw=tuple(raw.items()))

    def to_json(self) -> dict[str, Any]:
        """What the connector reports in its local configuration (as it was given)."""
        return dict(self.raw)
