"""Ingress: which local service answers a request (hostname, path) — cloudflared's rules.

The same rules come from three places: `--url` (one catch-all rule), config.yml (`ingress:`
plus top-level `originRequest:`) and the edge's remote configuration (JSON, durations in
integer seconds). Validation follows cloudflared's so a config accepted by one tool is
accepted by the other; every error names the rule, and keys we do not know or do not apply
produce warnings (kept on `Ingress.warnings`) rather than silence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from nbtunnel.connector.warp import WarpRouting, WarpRoutingError
from nbtunnel.core.errors import NbtunnelError


class IngressError(NbtunnelError):
    """An ingress configuration that cannot be used; the message names the rule."""


# originRequest keys: the ones applied by this connector, and the ones cloudflared knows that
# are accepted but not applied (a warning says so).
APPLIED_ORIGIN_KEYS = {"connectTimeout", "noTLSVerify", "httpHostHeader", "originServerName",
                       "disableChunkedEncoding"}
IGNORED_ORIGIN_KEYS = {"tlsTimeout", "tcpKeepAlive", "noHappyEyeballs", "keepAliveTimeout",
                       "keepAliveConnections", "matchSNItoHost", "caPool", "bastionMode",
                       "proxyAddress", "proxyPort", "proxyType", "ipRules", "http2Origin",
                       "access"}
_DURATION_KEYS = {"connectTimeout", "tlsTimeout", "tcpKeepAlive", "keepAliveTimeout"}
_RULE_KEYS = {"hostname", "path", "service", "originRequest"}
_TCP_SCHEMES = {"tcp", "ssh", "rdp", "smb"}


def parse_duration(value: object, where: str) -> float:
    """Go duration text ("30s", "1m30s", "500ms") or a number of seconds (remote JSON)."""
    if isinstance(value, bool):
        raise IngressError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise IngressError(f"{where}: invalid duration {value!r} (use e.g. 30s, 1m, 500ms)")
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


@dataclass(frozen=True)
class OriginRequest:
    """The originRequest settings this connector applies (cloudflared's defaults)."""

    connect_timeout: float = 30.0
    keep_alive_timeout: float = 90.0
    keep_alive_connections: int = 100
    no_tls_verify: bool = False
    http_host_header: str | None = None
    origin_server_name: str | None = None
    disable_chunked_encoding: bool = False


def origin_request(raw: dict[str, Any], where: str, base: OriginRequest,
                   warnings: list[str]) -> OriginRequest:
    """Parse an originRequest mapping over `base` (top-level defaults, then rule values)."""
    values = dict(base.__dict__)
    for key, value in raw.items():
        here = f"{where}: originRequest.{key}"
        if key in _DURATION_KEYS:
            seconds = parse_duration(value, here)
            if key == "connectTimeout":
                values["connect_timeout"] = seconds
            elif key == "keepAliveTimeout":
                values["keep_alive_timeout"] = seconds
        elif key in ("noTLSVerify", "disableChunkedEncoding"):
            if not isinstance(value, bool):
                raise IngressError(f"{here} must be true or false, got {value!r}")
            values["no_tls_verify" if key == "noTLSVerify" else
                   "disable_chunked_encoding"] = value
        elif key in ("httpHostHeader", "originServerName"):
            if not isinstance(value, str):
                raise IngressError(f"{here} must be a string, got {value!r}")
            values["http_host_header" if key == "httpHostHeader" else
                   "origin_server_name"] = value or None
        elif key == "keepAliveConnections":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise IngressError(f"{here} must be a non-negative integer, got {value!r}")
            values["keep_alive_connections"] = value
        if key in IGNORED_ORIGIN_KEYS:
            warnings.append(f"{here} is accepted but not applied by the nbtunnel connector")
        elif key not in APPLIED_ORIGIN_KEYS:
            warnings.append(f"{here}: unknown key, ignored")
    return OriginRequest(**values)


@dataclass(frozen=True)
class Rule:
    service: str
    hostname: str = ""
    path: re.Pattern[str] | None = None
    origin_request: dict[str, object] = field(default_factory=dict)
    origin: OriginRequest = field(default_factory=OriginRequest)

    def matches(self, hostname: str, path: str) -> bool:
        h = self.hostname
        if h and h != "*":
            if h.startswith("*."):
                if not hostname.endswith(h[1:]):
                    return False
            elif hostname != h:
                return False
        return self.path is None or self.path.search(path) is not None

    @property
    def matches_all(self) -> bool:
        return self.hostname in ("", "*") and self.path is None

    def describe(self) -> str:
        """cloudflared's `ingress rule` listing of one rule."""
        lines = []
        if self.hostname:
            lines.append(f"\thostname: {self.hostname}")
        if self.path is not None:
            lines.append(f"\tpath: {self.path.pattern}")
        lines.append(f"\tservice: {self.service}")
        return "\n".join(lines)


def _check_service(service: str, where: str) -> None:
    if service in ("hello_world", "hello-world", "bastion", "socks-proxy"):
        return
    if service.startswith("http_status:"):
        code = service.split(":", 1)[1]
        if not code.isdigit() or not 100 <= int(code) <= 999:
            raise IngressError(f"{where}: invalid http_status service {service!r} "
                               "(use http_status:NNN, 100-999)")
        return
    if service.startswith(("unix:", "unix+tls:")):
        if not service.split(":", 1)[1]:
            raise IngressError(f"{where}: unix service {service!r} needs a socket path")
        return
    m = re.match(r"^([a-z][a-z0-9+.-]*)://([^/?#]+)(/?)$", service)
    if not m:
        raise IngressError(f"{where}: service {service!r} must be scheme://host[:port] with no "
                           "path, http_status:NNN, unix:/path or hello_world")


def _check_hostname(hostname: str, where: str) -> None:
    if hostname in ("", "*"):
        return
    if hostname.count("*") > 1 or ("*" in hostname and not hostname.startswith("*.")):
        raise IngressError(f"{where}: hostname {hostname!r}: a wildcard may only be the whole "
                           "first label (*.example.com)")
    if ":" in hostname:
        raise IngressError(f"{where}: hostname {hostname!r} must not contain a port")


@dataclass(frozen=True)
class Ingress:
    rules: tuple[Rule, ...]
    warnings: tuple[str, ...] = ()
    defaults: dict[str, object] = field(default_factory=dict)
    warp_routing: WarpRouting = field(default_factory=WarpRouting)

    @cached_property
    def uses_paths(self) -> bool:
        """Whether a rule matches on the path (else `match` never looks at it)."""
        return any(rule.path is not None for rule in self.rules)

    @classmethod
    def single(cls, service: str) -> Ingress:
        _check_service(service, "--url")
        return cls((Rule(service=service),))

    @classmethod
    def from_rules(cls, raw: list[Any], defaults: dict[str, Any] | None = None,
                   warp_routing: object = None) -> Ingress:
        if not isinstance(raw, list) or not raw:
            raise IngressError("the ingress list is empty (give at least a catch-all rule)")
        warnings: list[str] = []
        defaults = dict(defaults or {})
        if not isinstance(defaults, dict):
            raise IngressError("originRequest must be a mapping")
        base = origin_request(defaults, "top-level", OriginRequest(), warnings)
        rules = []
        for i, item in enumerate(raw):
            where = f"ingress rule #{i + 1}"
            if not isinstance(item, dict):
                raise IngressError(f"{where}: expected a mapping with service, hostname, path")
            hostname = str(item.get("hostname") or "")
            if hostname:
                where += f" (hostname {hostname})"
            for key in sorted(set(item) - _RULE_KEYS):
                warnings.append(f"{where}: unknown key {key!r}, ignored")
            service = item.get("service")
            if not isinstance(service, str) or not service:
                raise IngressError(f"{where}: missing service")
            _check_service(service, where)
            if service == "socks-proxy":
                warnings.append(f"{where}: the socks-proxy service is not supported by the "
                                "nbtunnel connector; its streams get an error")
            _check_hostname(hostname, where)
            path_src = item.get("path")
            try:
                path = re.compile(str(path_src)) if path_src else None
            except re.error as exc:
                raise IngressError(f"{where}: invalid path regex {path_src!r}: {exc}") from exc
            raw_origin = item.get("originRequest") or {}
            if not isinstance(raw_origin, dict):
                raise IngressError(f"{where}: originRequest must be a mapping")
            origin = origin_request(raw_origin, where, base, warnings)
            rules.append(Rule(service, hostname.lower(), path, dict(raw_origin), origin))
        if not rules[-1].matches_all:
            raise IngressError("The last ingress rule must match all URLs (i.e. it should not "
                               "have a hostname or path filter)")
        for i, rule in enumerate(rules[:-1]):
            if rule.matches_all:
                raise IngressError(f"ingress rule #{i + 1} matches all URLs but is not the last "
                                   "rule, so the rules after it would never be used")
        try:
            warp = WarpRouting.parse(warp_routing, parse_duration)
        except WarpRoutingError as exc:
            raise IngressError(str(exc)) from exc
        return cls(tuple(rules), tuple(warnings), defaults, warp)

    @classmethod
    def from_json(cls, config: bytes) -> Ingress:
        try:
            doc = json.loads(config)
        except ValueError as exc:
            raise IngressError(f"configuration is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("ingress"), list):
            raise IngressError("configuration has no ingress list")
        return cls.from_rules(doc["ingress"], doc.get("originRequest") or {},
                              doc.get("warp-routing"))

    def match(self, hostname: str, path: str) -> tuple[int, Rule]:
        rules = self.rules
        if len(rules) == 1 and rules[0].matches_all:  # --url: one catch-all rule
            return 0, rules[0]
        hostname = hostname.rsplit(":", 1)[0] if hostname.count(":") == 1 else hostname
        hostname = hostname.lower()
        for i, rule in enumerate(self.rules):
            if rule.matches(hostname, path):
                return i, rule
        return len(self.rules) - 1, self.rules[-1]

    def to_json_rules(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for r in self.rules:
            item: dict[str, object] = {}
            if r.hostname:
                item["hostname"] = r.hostname
            if r.path is not None:
                item["path"] = r.path.pattern
            item["service"] = r.service
            item["originRequest"] = r.origin_request
            out.append(item)
        return out
