"""`nbtunnel login`, `nbtunnel tunnel create|list|info|delete|cleanup|token|route` and
`nbtunnel edge token create`: thin wrappers over the edge API that print what cloudflared
prints, so scripts written for one read the other. Secrets go to files (0400/0600) or stdout
when asked for (`token`), never to logs.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from nbtunnel.cli.apiclient import ApiClient, ApiClientError, Login, load_login, save_login
from nbtunnel.core.credentials import Credentials
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.home import default_home, write_credentials_file


def _client() -> ApiClient:
    return ApiClient(load_login())


def cmd_login(args: argparse.Namespace) -> int:
    client = ApiClient(_login_from(args))
    account = client.call("GET", "/account")  # check the token before keeping it
    path = save_login(args.api, args.token)
    print(f"Logged in to {args.api} as account {account['name']} ({account['tag']}).\n"
          f"API token saved to {path}")
    return 0


def _login_from(args: argparse.Namespace) -> Login:
    return Login(args.api.rstrip("/"), args.token)


def credentials_of(result: dict[str, Any]) -> Credentials:
    doc = result["credentials_file"]
    return Credentials(doc["AccountTag"], uuid.UUID(doc["TunnelID"]),
                       base64.b64decode(doc["TunnelSecret"]), doc.get("Endpoint") or "")


def cmd_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.secret:
        body["tunnel_secret"] = args.secret
    result = _client().call("POST", "/tunnels", body)
    creds = credentials_of(result)
    path = Path(args.credentials_file or default_home() / f"{creds.tunnel_id}.json")
    write_credentials_file(creds, path.expanduser())
    print(f"Tunnel credentials written to {path}. Keep this file secret. To revoke these "
          f"credentials, delete the tunnel.\n\nCreated tunnel {result['name']} with id "
          f"{result['id']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    query = {"include_deleted": "true"} if args.show_deleted else {}
    if args.name:
        query["name"] = args.name
    tunnels = _client().call("GET", "/tunnels", query=query)
    if args.output == "json":
        print(json.dumps(tunnels, indent=2))
        return 0
    if not tunnels:
        print("No tunnels were found for the given filter flags. You can use 'nbtunnel "
              "tunnel create' to create a tunnel.")
        return 0
    print("You can obtain more detailed information for each tunnel with `nbtunnel tunnel "
          "info <name/uuid>`")
    print(f"{'ID':<37}{'NAME':<21}{'CREATED':<27}CONNECTIONS")
    for t in tunnels:
        conns = ", ".join(f"{n}x{loc}" for loc, n in _by_location(t["connections"]).items())
        print(f"{t['id']:<37}{t['name']:<21}{t['created_at'][:25]:<27}{conns}")
    return 0


def _by_location(conns: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in conns:
        out[c["colo_name"]] = out.get(c["colo_name"], 0) + 1
    return out


def cmd_info(args: argparse.Namespace) -> int:
    t = _client().tunnel(args.tunnel)
    if args.output == "json":
        print(json.dumps(t, indent=2))
        return 0
    print(f"NAME:     {t['name']}\nID:       {t['id']}\nCREATED:  {t['created_at']}\n"
          f"ROUTES:   {', '.join(t['routes']) or '-'}\n")
    if not t["connections"]:
        print(f"Your tunnel {t['id']} does not have any active connection.")
        return 0
    print(f"{'CONNECTOR ID':<37}{'INDEX':<7}{'ARCHITECTURE':<14}{'VERSION':<20}"
          f"{'ORIGIN IP':<16}EDGE")
    for c in t["connections"]:
        print(f"{c['connector_id']:<37}{c['conn_index']:<7}{c['arch']:<14}"
              f"{c['client_version']:<20}{c['origin_ip']:<16}{c['colo_name']}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    client = _client()
    for ref in args.tunnels:
        t = client.tunnel(ref)
        query = {"force": "true"} if args.force else None
        client.call("DELETE", f"/tunnels/{t['id']}", query=query)
        print(f"Deleted tunnel {t['name']} ({t['id']})")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    client = _client()
    for ref in args.tunnels:
        t = client.tunnel(ref)
        body = {"connector_id": args.connector_id} if args.connector_id else {}
        r = client.call("POST", f"/tunnels/{t['id']}/cleanup", body)
        print(f"Cleaned up {r['closed_connections']} connection(s) of tunnel {t['name']}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    client = _client()
    t = client.tunnel(args.tunnel)
    token = client.call("GET", f"/tunnels/{t['id']}/token")["token"]
    if args.cred_file:
        write_credentials_file(Credentials.from_token(token), Path(args.cred_file))
        print(f"Tunnel credentials written to {args.cred_file}")
    else:
        print(token)
    return 0


def cmd_route_dns(args: argparse.Namespace) -> int:
    client = _client()
    t = client.tunnel(args.tunnel)
    r = client.call("POST", "/routes", {"hostname": args.hostname, "tunnel_id": t["id"],
                                        "overwrite": bool(args.overwrite_dns)})
    print(f"Added route {r['hostname']} which will route to this tunnel tunnelID={t['id']}")
    return 0


def cmd_route_list(args: argparse.Namespace) -> int:
    for r in _client().call("GET", "/routes"):
        print(f"{r['hostname']:<40}{r['tunnel_id']}")
    return 0


def cmd_route_delete(args: argparse.Namespace) -> int:
    _client().call("DELETE", f"/routes/{args.hostname}")
    print(f"Deleted route {args.hostname}")
    return 0


def cmd_edge_token_create(args: argparse.Namespace) -> int:
    import asyncio

    from nbtunnel.edge.bootstrap import create_token
    from nbtunnel.edge.stores import open_store

    state = Path(args.state_dir or default_home() / "edge")

    async def make() -> str:
        store = open_store(getattr(args, "store", None), state)
        await store.start()
        try:
            return await create_token(store, args.account, args.token_name)
        finally:
            await store.aclose()

    print(asyncio.run(make()))
    return 0


COMMANDS = {
    "create": cmd_create, "list": cmd_list, "info": cmd_info, "delete": cmd_delete,
    "cleanup": cmd_cleanup, "token": cmd_token,
}


def run_command(func: Any, args: argparse.Namespace) -> int:
    """Run a management command; API and file errors become one clear line and exit 1."""
    try:
        return int(func(args))
    except (ApiClientError, NbtunnelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
