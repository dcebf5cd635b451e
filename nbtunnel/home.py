"""nbtunnel's state directory on this machine and the secret files kept in it.

`NBTUNNEL_HOME`, else `~/.nbtunnel`, holds the edge's state, the CLI login, credentials files
and the notebook configuration. Secrets are created with their final mode (no window where
they are world-readable). The edge, the CLI, the API and the lab all use this module, so it
imports nothing of nbtunnel but the core.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nbtunnel.core.credentials import Credentials, CredentialsError


def default_home() -> Path:
    env = os.environ.get("NBTUNNEL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".nbtunnel"


def read_credentials_file(path: Path) -> Credentials:
    """A cloudflared credentials file (`<TunnelID>.json`); errors name the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc}") from exc
    return Credentials.from_file_json(text, str(path))


def write_credentials_file(creds: Credentials, path: Path, *, mode: int = 0o400) -> None:
    """Write a credentials file that only its owner can read (cloudflared uses 0400).

    An existing file is refused, as cloudflared refuses to overwrite credentials.
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
