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
            return cls(doc["a"], uuid.UUID(doc["t"]), base64.b64decode(doc["s"]),
                       doc.get("e", ""))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise CredentialsError("Provided Tunnel token is not valid.") from exc

    @classmethod
    def from_file_json(cls, text: str, source: str = "credentials file") -> Credentials:
        """Parse a credentials file's text; `source` (usually its path) names it in errors."""
        try:
            doc = json.loads(text)
            return cls(doc["AccountTag"], uuid.UUID(doc["TunnelID"]),
                       base64.b64decode(doc["TunnelSecret"]), doc.get("Endpoint") or "")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise CredentialsError(f"invalid credentials file {source}: {exc}") from exc

    @classmethod
    def from_quick_result(cls, result: dict[str, object]) -> Credentials:
        try:
            return cls(str(result["account_tag"]), uuid.UUID(str(result["id"])),
                       base64.b64decode(str(result["secret"])))
        except (ValueError, KeyError, binascii.Error) as exc:
            raise CredentialsError(f"invalid quick-tunnel answer: {exc}") from exc

