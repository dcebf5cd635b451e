"""The access client: reach a TCP service a tunnel publishes (`nbtunnel access`, `connect`).

It speaks what `cloudflared access tcp|ssh` speaks (a WebSocket to the hostname carrying raw
bytes), so it works with an nbtunnel edge or Cloudflare's, and a cloudflared or nbtunnel
connector serving a `tcp://`/`ssh://` rule.
"""

from nbtunnel.access.client import connect, open_carrier
from nbtunnel.access.target import AccessError, AccessTarget

__all__ = ["AccessError", "AccessTarget", "connect", "open_carrier"]
