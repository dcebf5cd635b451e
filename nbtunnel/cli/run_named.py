"""`nbtunnel tunnel run [TUNNEL]` and `nbtunnel tunnel ingress validate|rule`.

Where things come from, in cloudflared's order: a token (`--token`, `$TUNNEL_TOKEN`) beats a
credentials file (`--credentials-file`, then `credentials-file:` in config.yml), which beats
`<TunnelID>.json` found for the tunnel named on the command line or in `tunnel:`. Ingress
comes from config.yml (or `--url`); without either every request gets 503, as cloudflared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbtunnel.api.edges import DEFAULT_EDGE_PORT
from nbtunnel.api.targets import normalize_target
from nbtunnel.cli.edge_choice import choose_edge, cloudflare_options, named_edge
from nbtunnel.cli.serve import serve_with_metrics
from nbtunnel.connector.access_control import AccessControl, parse_auth
from nbtunnel.connector.config_file import TunnelConfigFile, find_config, load_config
from nbtunnel.connector.ingress import Ingress, IngressError, parse_duration
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials, CredentialsError
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.edge.state_files import holds_tunnel
from nbtunnel.edge.stores import SQLITE_FILE
from nbtunnel.home import default_home, read_credentials_file

log = logging.getLogger("nbtunnel")


def _config(args: argparse.Namespace) -> TunnelConfigFile | None:
    path = getattr(args, "config", None)
    found = Path(path).expanduser() if path else find_config(default_home())
    return load_config(found) if found else None


def resolve_credentials(args: argparse.Namespace, cfg: TunnelConfigFile | None) -> Credentials:
    token = getattr(args, "token", None) or os.environ.get("TUNNEL_TOKEN") or (
        cfg.flags.get("token") if cfg else None)
    if token:
        return Credentials.from_token(str(token))
    path = getattr(args, "credentials_file", None) or (cfg.credentials_file if cfg else None)
    if path:
        return read_credentials_file(Path(path).expanduser())
    ref = getattr(args, "tunnel", None) or (cfg.tunnel if cfg else None)
    if not ref:
        raise CredentialsError("no tunnel credentials: give --token, --credentials-file, a "
                               "TUNNEL argument or `tunnel:` in config.yml")
    try:
        tid = uuid.UUID(ref)
    except ValueError:
        from nbtunnel.cli.apiclient import ApiClient, load_login

        tid = uuid.UUID(ApiClient(load_login()).tunnel(ref)["id"])
    for d in (default_home(), Path.home() / ".cloudflared"):
        if (d / f"{tid}.json").exists():
            return read_credentials_file(d / f"{tid}.json")
    raise CredentialsError(f"no credentials file {tid}.json in {default_home()} or "
                           "~/.cloudflared; give --credentials-file")


def _flag(args: argparse.Namespace, cfg: TunnelConfigFile | None, name: str,
          default: Any = None) -> Any:
    value = getattr(args, name.replace("-", "_"), None)
    if value is None and cfg is not None:
        value = cfg.flags.get(name)
    return default if value is None else value


async def _connector(args: argparse.Namespace, cfg: TunnelConfigFile | None,
                     creds: Credentials, ingress: Ingress) -> Connector:
    """Flags beat config.yml, which beats the defaults (cloudflared's precedence): edge,
    protocol, ha-connections, grace-period."""
    choice = choose_edge(getattr(args, "edge", None), _flag(args, cfg, "edge"),
                         default=_default_edge(creds))
    options = cloudflare_options(args, _flag(args, cfg, "region") or creds.endpoint or None)
    if _flag(args, cfg, "cacert") and not options.cacert:
        options = replace(options, cacert=str(_flag(args, cfg, "cacert")))
    if choice.kind == "local":
        raise NbtunnelError("--edge local starts an edge for quick tunnels only; a named "
                            "tunnel runs on its edge: cloudflare or HOST:PORT")
    cloud, choice = await named_edge(choice, options)
    protocol = str(_flag(args, cfg, "protocol", "auto" if cloud else "quic"))
    if protocol not in ("quic", "http2", "auto"):
        raise NbtunnelError(f"protocol {protocol!r}: expected quic, http2 or auto")
    grace = _flag(args, cfg, "grace-period", 30.0)
    if isinstance(grace, str):
        grace = parse_duration(grace, "grace-period")
    auth = _flag(args, cfg, "auth")  # --auth, or `auth:` in config.yml
    access = AccessControl(parse_auth(str(auth))) if auth else None
    if access is not None and access.spec.kind == "token":
        print(f"--auth token: add ?nbtunnel_token={access.spec.token} to a tunnel URL "
              f"once in a browser, or send Authorization: Bearer {access.spec.token}",
              flush=True)
    if cloud is not None:
        edge, pool, trust, cacert = [], cloud.pool, cloud.trust, None
    else:
        edge, pool, trust = list(choice.addresses), None, None
        cacert = _flag(args, cfg, "cacert") or str(default_home() / "edge" / "ca.pem")
    return Connector(ConnectorConfig(
        edge=edge, pool=pool, trust=trust, cacert=cacert, credentials=creds, ingress=ingress,
        ha_connections=int(_flag(args, cfg, "ha-connections", 4)), grace_period=float(grace),
        protocol=protocol, quic_backend=getattr(args, "quic_backend", None), access=access,
        config_flags={k: str(v) for k, v in (cfg.flags if cfg else {}).items()
                      if isinstance(v, str | int | float) and k not in ("token", "auth")}))


def _default_edge(creds: Credentials) -> str:
    """Without any edge setting: the self-hosted edge set up on this machine
    ($NBTUNNEL_HOME/edge) when the tunnel is one of its own (or its store cannot be read,
    e.g. it runs on PostgreSQL); otherwise Cloudflare's edge, where tokens and credentials
    files from a Cloudflare account belong."""
    edge_dir = default_home() / "edge"
    if not (edge_dir / "ca.pem").exists():
        return "cloudflare"
    if holds_tunnel(edge_dir / SQLITE_FILE, creds.tunnel_id) is False:
        log.info("Tunnel %s is not one of the local edge's (%s): using Cloudflare's edge "
                 "(--edge decides explicitly)", creds.tunnel_id, edge_dir)
        return "cloudflare"
    return f"127.0.0.1:{DEFAULT_EDGE_PORT}"


def run_named(args: argparse.Namespace) -> Any:
    async def runner(stop: asyncio.Event) -> int:
        try:
            cfg = _config(args)
            for warning in cfg.warnings if cfg else []:
                log.warning("%s", warning)
            creds = resolve_credentials(args, cfg)
            url = getattr(args, "url", None) or (cfg.flags.get("url") if cfg else None)
            if url:
                ingress = Ingress.single(normalize_target(str(url)))
            elif getattr(args, "hello_world", False):
                ingress = Ingress.single("hello_world")
            elif cfg is not None and cfg.ingress is not None:
                ingress = cfg.ingress
            else:
                log.warning("No ingress rules were defined in provided config (if any) nor "
                            "from the cli, nbtunnel will return 503 for all incoming HTTP "
                            "requests")
                ingress = Ingress.single("http_status:503")
            connector = await _connector(args, cfg, creds, ingress)
        except (NbtunnelError, OSError, ValueError) as exc:
            log.error("%s", exc)
            return 1
        log.info("Starting tunnel tunnelID=%s", creds.tunnel_id)
        return await serve_with_metrics(connector, stop, _flag(args, cfg, "metrics"))

    return runner


def ingress_command(args: argparse.Namespace) -> int:
    """`ingress validate` / `ingress rule URL`, printing what cloudflared prints."""
    inline = getattr(args, "json", None)
    try:
        if inline:
            source = "the --json argument"
            ingress = Ingress.from_json(inline.encode())
        else:
            path = Path(args.config).expanduser() if args.config else find_config(default_home())
            if path is None:
                print("Validation failed: no config file found; give --config FILE")
                return 1
            source = str(path)
            if args.ingress_command == "validate":
                print(f"Validating rules from {source}")
            cfg = load_config(path, require_ingress=True)
            assert cfg.ingress is not None
            ingress = cfg.ingress
            for warning in cfg.warnings:
                print(f"Warning: {warning}")
    except (IngressError, NbtunnelError) as exc:
        print(f"Validation failed: {exc}")
        return 1
    if args.ingress_command == "validate":
        if inline:
            print(f"Validating rules from {source}")
        print("OK")
        return 0
    parts = urlsplit(args.url if "://" in args.url else "https://" + args.url)
    if not parts.hostname:
        print(f"Validation failed: {args.url!r} is not a URL with a hostname")
        return 1
    index, rule = ingress.match(parts.hostname, parts.path or "/")
    print(f"Using rules from {source}")
    print(f"Matched rule #{index}")
    print(rule.describe())
    return 0


def dump_json(obj: object) -> str:
    return json.dumps(obj, indent=2)
