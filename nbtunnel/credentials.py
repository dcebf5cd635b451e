"""Tunnel credentials in cloudflared's formats: credentials file, token, quick-tunnel answer.

- credentials file: `{"AccountTag","TunnelSecret" (std base64),"TunnelID","Endpoint"}`
- token: std base64 of `{"a": account tag, "t": tunnel id, "s": base64 secret, "e"?: endpoint}`
- quick tunnel: the `result` object of `POST /tunnel` (`id`, `account_tag`, `secret`, `hostname`)

Shared by the edge (which issues them) and the connector (which presents them), so it imports
neither.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

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
    def from_file(cls, path: Path) -> Credentials:
        try:
            doc = json.loads(path.read_text())
            return cls(doc["AccountTag"], uuid.UUID(doc["TunnelID"]),
                       base64.b64decode(doc["TunnelSecret"]), doc.get("Endpoint") or "")
        except OSError as exc:
            raise CredentialsError(f"cannot read credentials file {path}: {exc}") from exc
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise CredentialsError(f"invalid credentials file {path}: {exc}") from exc

    @classmethod
    def from_quick_result(cls, result: dict[str, object]) -> Credentials:
        try:
            return cls(str(result["account_tag"]), uuid.UUID(str(result["id"])),
                       base64.b64decode(str(result["secret"])))
        except (ValueError, KeyError, binascii.Error) as exc:
            raise CredentialsError(f"invalid quick-tunnel answer: {exc}") from exc


def write_credentials_file(creds: Credentials, path: Path, *, mode: int = 0o400) -> None:
    """Write a credentials file that only its owner can read (cloudflared uses 0400).

    The file is created with the final mode (no window where it is world-readable); an
    existing file is refused, as cloudflared refuses to overwrite credentials.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise CredentialsError(f"{path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise CredentialsError(f"cannot write credentials file {path}: {exc}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(creds.to_file_json())
    os.chmod(path, mode)


def write_secret_file(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600 from the start (tokens, logins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
