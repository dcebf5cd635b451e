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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbtunnel.api.edges import DEFAULT_EDGE_PORT
from nbtunnel.api.targets import normalize_target, parse_host_port
from nbtunnel.cli.serve import serve_connector
from nbtunnel.connector.access_control import AccessControl, parse_auth
from nbtunnel.connector.config_file import TunnelConfigFile, find_config, load_config
from nbtunnel.connector.ingress import Ingress, IngressError, parse_duration
from nbtunnel.connector.metrics import MetricsServer
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials, CredentialsError
from nbtunnel.core.errors import NbtunnelError
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
            edges = _flag(args, cfg, "edge") or os.environ.get("NBTUNNEL_EDGE", "127.0.0.1")
            if isinstance(edges, str):
                edges = edges.split(",")
            edges = [e if isinstance(e, tuple) else parse_host_port(str(e), DEFAULT_EDGE_PORT)
                     for e in edges]
            cacert = _flag(args, cfg, "cacert") or str(default_home() / "edge" / "ca.pem")
            ha = int(_flag(args, cfg, "ha-connections", 4))
            grace = _flag(args, cfg, "grace-period", 30.0)
            if isinstance(grace, str):
                grace = parse_duration(grace, "grace-period")
            auth = _flag(args, cfg, "auth")  # --auth, or `auth:` in config.yml
            access = AccessControl(parse_auth(str(auth))) if auth else None
            if access is not None and access.spec.kind == "token":
                print(f"--auth token: add ?nbtunnel_token={access.spec.token} to a tunnel URL "
                      f"once in a browser, or send Authorization: Bearer {access.spec.token}",
                      flush=True)
            connector = Connector(ConnectorConfig(
                edge=list(edges), credentials=creds, ingress=ingress, cacert=cacert,
                ha_connections=ha, grace_period=float(grace),
                quic_backend=getattr(args, "quic_backend", None),
                config_flags={k: str(v) for k, v in (cfg.flags if cfg else {}).items()
                              if isinstance(v, str | int | float) and k not in ("token", "auth")},
                access=access,
            ))
        except (NbtunnelError, OSError, ValueError) as exc:
            log.error("%s", exc)
            return 1
        log.info("Starting tunnel tunnelID=%s", creds.tunnel_id)
        metrics_addr = _flag(args, cfg, "metrics")
        server = None
        try:
            if metrics_addr:
                server = MetricsServer(connector)
                host, port = parse_host_port(str(metrics_addr), 0)
                await server.start(host, port)
            return await serve_connector(connector, stop)
        except OSError as exc:
            log.error("cannot start the metrics server on %s: %s", metrics_addr, exc)
            return 1
        finally:
            if server is not None:
                await server.close()

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
