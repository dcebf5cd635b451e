"""The OpenAPI 3.1 document for `/api/v1`, built from one table so it cannot drift far from
the dispatcher in `rest_api.py` (a test checks every documented path answers)."""

from __future__ import annotations

from typing import Any

from nbtunnel import __version__

_STR = {"type": "string"}
_OBJ = {"type": "object"}

# (method, path, summary, request body properties or None, required fields, query params)
ENDPOINTS: list[tuple[str, str, str, dict[str, Any] | None, list[str], list[str]]] = [
    ("get", "/account", "The account the bearer token belongs to", None, [], []),
    ("get", "/tunnels", "List named tunnels", None, [], ["name", "include_deleted"]),
    ("post", "/tunnels", "Create a tunnel; returns its credentials file and token",
     {"name": _STR, "tunnel_secret": {"type": "string", "description": "base64, >= 32 bytes"}},
     ["name"], []),
    ("get", "/tunnels/{tunnel}", "A tunnel with its live connections and routes", None, [], []),
    ("delete", "/tunnels/{tunnel}", "Delete a tunnel (409 while connected unless force)",
     None, [], ["force"]),
    ("post", "/tunnels/{tunnel}/cleanup", "Disconnect the tunnel's connectors",
     {"connector_id": _STR}, [], []),
    ("get", "/tunnels/{tunnel}/token", "The tunnel token for `run --token`", None, [], []),
    ("get", "/tunnels/{tunnel}/configurations",
     "Current remote configuration and what connectors reported", None, [], []),
    ("put", "/tunnels/{tunnel}/configurations",
     "New configuration version, pushed to live connectors (422 if one refuses it)",
     {"config": {"type": "object", "required": ["ingress"], "properties": {
         "ingress": {"type": "array", "items": _OBJ}, "warp-routing": _OBJ,
         "originRequest": _OBJ}}}, ["config"], []),
    ("get", "/routes", "List hostname routes", None, [], ["tunnel_id"]),
    ("post", "/routes", "Route a hostname to a tunnel (one hostname, one tunnel)",
     {"hostname": _STR, "tunnel_id": _STR, "overwrite": {"type": "boolean"}},
     ["hostname", "tunnel_id"], []),
    ("delete", "/routes/{hostname}", "Remove a hostname route", None, [], []),
]

_ENVELOPE = {"type": "object", "properties": {
    "success": {"type": "boolean"}, "result": {}, "messages": {"type": "array"},
    "errors": {"type": "array", "items": {"type": "object", "properties": {
        "code": {"type": "integer"}, "message": _STR}}}}}


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, props, required, query in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": summary,
            "parameters": [{"name": p.strip("{}"), "in": "path", "required": True,
                            "schema": _STR} for p in path.split("/") if p.startswith("{")]
            + [{"name": q, "in": "query", "schema": _STR} for q in query],
            "responses": {
                "200": {"description": "success",
                        "content": {"application/json": {"schema": _ENVELOPE}}},
                "4XX": {"description": "refused; errors[0].message says why",
                        "content": {"application/json": {"schema": _ENVELOPE}}},
            },
        }
        if props is not None:
            op["requestBody"] = {"required": bool(required), "content": {"application/json": {
                "schema": {"type": "object", "properties": props, "required": required,
                           "additionalProperties": False}}}}
        paths.setdefault("/api/v1" + path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "nbtunnel edge control plane", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
