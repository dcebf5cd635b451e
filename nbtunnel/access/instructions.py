"""What to run on the other machine to reach a TCP service a tunnel publishes.

A `tcp://`/`ssh://` tunnel has no web page: the user needs an access client and, for SSH, a
`~/.ssh/config` stanza. `instructions()` writes the exact commands for nbtunnel and cloudflared,
including the flags a self-hosted edge needs (its HTTPS address and CA).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_LOCAL = {"ssh": 2222, "rdp": 13389, "smb": 10445}


@dataclass(frozen=True)
class EdgeReach:
    """How a client reaches the edge's HTTPS front: None means the hostname resolves to it
    (port 443, a publicly trusted certificate)."""

    https: tuple[str, int] | None = None
    ca_path: str | None = None


def local_port(service: str) -> int:
    parts = urlsplit(service)
    scheme = parts.scheme.lower()
    if scheme in DEFAULT_LOCAL:
        return DEFAULT_LOCAL[scheme]
    port = parts.port or 0
    return port if port > 1024 else 10000 + port


def instructions(hostname: str, service: str, reach: EdgeReach) -> str:
    """Multi-line text: access commands for nbtunnel and cloudflared, and an ssh stanza."""
    port = local_port(service)
    loopback = reach.https is not None and reach.https[0] in ("127.0.0.1", "::1", "localhost")
    if loopback and port == urlsplit(service).port:  # same machine: the origin holds that port
        port = port + 10000 if port <= 55535 else port - 10000
    scheme = urlsplit(service).scheme.lower() or "tcp"
    ours, theirs, ours_ssh, theirs_ssh = "", "", "", ""
    if reach.https is not None:
        host, https_port = reach.https
        ours = f" --edge-address {host}:{https_port}"
        if reach.ca_path:
            ours += f" --edge-ca {reach.ca_path}"
        theirs = f" --connect-to {hostname}:{https_port}:{host}"
        ours_ssh = ours
        theirs_ssh = f" --connect-to %h:{https_port}:{host}"
    lines = [
        f"nbtunnel: {service} is a TCP service; browsers cannot use it. On the machine you work "
        "from, run one of:",
        f"  nbtunnel access tcp --hostname {hostname} --url 127.0.0.1:{port}{ours}",
        f"  cloudflared access tcp --hostname {hostname} --url 127.0.0.1:{port}{theirs}",
        f"and connect your client to 127.0.0.1:{port}"
        + (f" (ssh -p {port} USER@127.0.0.1)." if scheme == "ssh" else "."),
    ]
    if scheme in ("ssh", "tcp"):
        lines += [
            "For ssh, add to ~/.ssh/config (then `ssh USER@" + hostname + "`):",
            f"  Host {hostname}",
            f"    ProxyCommand nbtunnel access ssh --hostname %h{ours_ssh}",
            f"  # or: ProxyCommand cloudflared access ssh --hostname %h{theirs_ssh}",
        ]
    if loopback:
        lines.append("(this edge listens on loopback only: run these on this machine, or use "
                     "an edge the other machine can reach)")
    elif reach.https is None:
        lines.append("(for an edge whose certificate comes from a private CA, add "
                     "--edge-ca FILE to the nbtunnel commands)")
    return "\n".join(lines)
