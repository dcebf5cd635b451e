"""cloudflared's config.yml: `tunnel`, `credentials-file`, `ingress`, `originRequest`, and any
CLI flag name as a key (`edge`, `cacert`, `metrics`, `protocol`, `ha-connections`, ...).

Loaded once at start by `nbtunnel tunnel run` and the `ingress` commands. Flags we do not
know are reported as warnings (cloudflared has many; silence would hide typos).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nbtunnel.connector.ingress import Ingress, IngressError
from nbtunnel.core.errors import NbtunnelError

# top-level keys this connector uses (besides ingress/originRequest/tunnel/credentials-file)
KNOWN_FLAGS = {"edge", "cacert", "metrics", "protocol", "ha-connections", "grace-period",
               "loglevel", "url", "hello-world", "no-autoupdate", "retries", "quic-backend",
               "token", "credentials-contents", "no-prechecks", "log-format", "warp-routing",
               "auth"}
ACCEPTED_FLAGS = {"autoupdate-freq", "transport-loglevel", "logfile", "log-directory",
                  "edge-ip-version", "region", "label", "pidfile", "origincert",
                  "post-quantum", "management-diagnostics", "tag", "compression-quality"}


class ConfigFileError(NbtunnelError):
    """config.yml cannot be read or is not a mapping; the message names the file."""


@dataclass
class TunnelConfigFile:
    path: Path
    tunnel: str | None = None
    credentials_file: str | None = None
    ingress: Ingress | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def default_config_paths(home: Path) -> list[Path]:
    """Where cloudflared looks, plus nbtunnel's own home first."""
    dirs = [home, Path.home() / ".cloudflared", Path.home() / ".cloudflare-warp",
            Path.home() / "cloudflare-warp", Path("/etc/cloudflared"),
            Path("/usr/local/etc/cloudflared")]
    return [d / name for d in dirs for name in ("config.yml", "config.yaml")]


def find_config(home: Path) -> Path | None:
    return next((p for p in default_config_paths(home) if p.is_file()), None)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigFileError(f"{path}: expected a mapping at the top level")
    return doc


def load_config(path: Path, *, require_ingress: bool = False) -> TunnelConfigFile:
    """Parse and validate; IngressError names the failing rule."""
    doc = read_yaml(path)
    cfg = TunnelConfigFile(path=path, raw=doc)
    cfg.tunnel = str(doc["tunnel"]) if doc.get("tunnel") else None
    creds = doc.get("credentials-file") or doc.get("cred-file")
    if creds:
        p = Path(str(creds)).expanduser()
        cfg.credentials_file = str(p if p.is_absolute() else path.parent / p)
    if "ingress" in doc:
        defaults = doc.get("originRequest") or {}
        if not isinstance(defaults, dict):
            raise IngressError("originRequest must be a mapping")
        cfg.ingress = Ingress.from_rules(doc["ingress"], defaults, doc.get("warp-routing"))
        cfg.warnings += cfg.ingress.warnings
    elif require_ingress:
        raise IngressError(f"{path} has no ingress rules")
    handled = {"tunnel", "credentials-file", "cred-file", "ingress", "originRequest"}
    for key, value in doc.items():
        if key in handled:
            continue
        cfg.flags[key] = value
        if key in ACCEPTED_FLAGS:
            cfg.warnings.append(f"{path}: key {key!r} is accepted but has no effect in nbtunnel")
        elif key not in KNOWN_FLAGS:
            cfg.warnings.append(f"{path}: unknown key {key!r}, ignored")
    cacert = cfg.flags.get("cacert")
    if isinstance(cacert, str):
        p = Path(cacert).expanduser()
        cfg.flags["cacert"] = str(p if p.is_absolute() else path.parent / p)
    return cfg
