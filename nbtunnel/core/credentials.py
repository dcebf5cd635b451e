"""Tunnel credentials in cloudflared's formats: credentials file, token, quick-tunnel answer.

- credentials file: `{"AccountTag","TunnelSecret" (std base64),"TunnelID","Endpoint"}`
- token: std base64 of `{"a": account tag, "t": tunnel id, "s": base64 secret, "e"?: endpoint}`
- quick tunnel: the `result` object of `POST /tunnel` (`id`, `account_tag`, `secret`, `hostname`)

Shared by the edge (which issues them) and the connector (which presents them), so it lives in
the core: pure text <-> `Credentials`. Reading and writing the files (modes 0400/0600) is
`nbtunnel.home`'s job.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass

from nbtunnel.core.errors import NbtunnelError


class CredentialsError(NbtunnelError):
    """Credentials that cannot be read or parsed; the message says which and why."""


def _field(doc: object, key: str, *, optional: bool = False) -> str:
    """A string field of a decoded JSON object (anything else is a ValueError)."""
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    value = doc.get(key, "" if optional else None)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string" if key in doc else f"no {key}")
    return value


_BAD = (ValueError, KeyError, TypeError, binascii.Error, RecursionError)


@dataclass(frozen=True)
class Credentials:
    account_tag: str
    tunnel_id: uuid.UUID
    secret: bytes
    endpoint: str = ""

    def to_file_json(self) -> str:
        doc = {
            "AccountTag": self.account_tag,
            "TunnelSecret": base64.b64encode(self.secret).decode(),
            "TunnelID": str(self.tunnel_id),
            "Endpoint": self.endpoint,
        }
        return json.dumps(doc)

    def to_token(self) -> str:
        doc: dict[str, str] = {
            "a": self.account_tag,
            "t": str(self.tunnel_id),
            "s": base64.b64encode(self.secret).decode(),
        }
        if self.endpoint:
            doc["e"] = self.endpoint
        return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()

    @classmethod
    def from_token(cls, token: str) -> Credentials:
        try:
            doc = json.loads(base64.b64decode(token.strip(), validate=False))
            return cls(_field(doc, "a"), uuid.UUID(_field(doc, "t")),
                       base64.b64decode(_field(doc, "s")), _field(doc, "e", optional=True))
        except _BAD as exc:
            raise CredentialsError("Provided Tunnel token is not valid.") from exc

    @classmethod
    def from_file_json(cls, text: str, source: str = "credentials file") -> Credentials:
        """Parse a credentials file's text; `source` (usually its path) names it in errors."""
        try:
            doc = json.loads(text)
            return cls(_field(doc, "AccountTag"), uuid.UUID(_field(doc, "TunnelID")),
                       base64.b64decode(_field(doc, "TunnelSecret")),
                       _field(doc, "Endpoint", optional=True))
        except _BAD as exc:
            raise CredentialsError(f"invalid credentials file {source}: {exc}") from exc

    @classmethod
    def from_quick_result(cls, result: dict[str, object]) -> Credentials:
        try:
            return cls(str(result["account_tag"]), uuid.UUID(str(result["id"])),
                       base64.b64decode(str(result["secret"])))
        except _BAD as exc:
            raise CredentialsError(f"invalid quick-tunnel answer: {exc}") from exc

