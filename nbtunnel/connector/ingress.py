"""Ingress: which local service answers a request (hostname, path) — cloudflared's rules.

A minimal form for quick tunnels and remote configuration: rules with `hostname` (exact, or
`*.example.com`), `path` (unanchored regex searched in the path) and `service`; the last rule
is the catch-all. The control-plane issue grows this into full config.yml support.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from nbtunnel.core.errors import NbtunnelError


class IngressError(NbtunnelError):
    """An ingress configuration that cannot be used; the message names the rule."""


@dataclass(frozen=True)
class Rule:
    service: str
    hostname: str = ""
    path: re.Pattern[str] | None = None
    origin_request: dict[str, object] = field(default_factory=dict)

    def matches(self, hostname: str, path: str) -> bool:
        h = self.hostname
        if h and h != "*":
            if h.startswith("*."):
                if not hostname.endswith(h[1:]):
                    return False
            elif hostname != h:
                return False
        return self.path is None or self.path.search(path) is not None


def _check_service(service: str, where: str) -> None:
    if service in ("hello_world", "hello-world"):
        return
    if service.startswith("http_status:"):
        code = service.split(":", 1)[1]
        if not code.isdigit() or not 100 <= int(code) <= 999:
            raise IngressError(f"{where}: invalid http_status service {service!r}")
        return
    if service.startswith("unix:"):
        return
    m = re.match(r"^(https?|wss?|tcp|ssh|rdp|smb)://[^/]+/?$", service)
    if not m:
        raise IngressError(f"{where}: service {service!r} must be scheme://host[:port] with no "
                           "path, http_status:NNN, unix:/path or hello_world")


@dataclass(frozen=True)
class Ingress:
    rules: tuple[Rule, ...]

    @classmethod
    def single(cls, service: str) -> Ingress:
        _check_service(service, "--url")
        return cls((Rule(service=service),))

    @classmethod
    def from_rules(cls, raw: list[dict[str, object]]) -> Ingress:
        if not raw:
            raise IngressError("the ingress list is empty")
        rules = []
        for i, item in enumerate(raw):
            where = f"ingress rule #{i + 1}"
            service = str(item.get("service") or "")
            if not service:
                raise IngressError(f"{where}: missing service")
            _check_service(service, where)
            hostname = str(item.get("hostname") or "")
            path_src = item.get("path")
            try:
                path = re.compile(str(path_src)) if path_src else None
            except re.error as exc:
                raise IngressError(f"{where}: invalid path regex: {exc}") from exc
            origin = item.get("originRequest") or {}
            rules.append(Rule(service, hostname, path, dict(origin)))  # type: ignore[call-overload]
        last = rules[-1]
        if (last.hostname not in ("", "*")) or last.path is not None:
            raise IngressError("The last ingress rule must match all URLs (i.e. it should not "
                               "have a hostname or path filter)")
        return cls(tuple(rules))

    @classmethod
    def from_json(cls, config: bytes) -> Ingress:
        try:
            doc = json.loads(config)
        except ValueError as exc:
            raise IngressError(f"configuration is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("ingress"), list):
            raise IngressError("configuration has no ingress list")
        return cls.from_rules(doc["ingress"])

    def match(self, hostname: str, path: str) -> tuple[int, Rule]:
        hostname = hostname.rsplit(":", 1)[0] if hostname.count(":") == 1 else hostname
        for i, rule in enumerate(self.rules):
            if rule.matches(hostname, path):
                return i, rule
        return len(self.rules) - 1, self.rules[-1]

    def to_json_rules(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for r in self.rules:
            item: dict[str, object] = {"service": r.service, "originRequest": r.origin_request}
            if r.hostname:
                item["hostname"] = r.hostname
            if r.path is not None:
                item["path"] = r.path.pattern
            out.append(item)
        return out
