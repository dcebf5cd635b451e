"""A small synchronous client for the edge's `/api/v1`, and the saved login (`nbtunnel login`).

The CLI makes one or two calls per command, so plain urllib keeps it import-light. The login
(API URL and token) lives in `~/.nbtunnel/login.json`, mode 0600; `$NBTUNNEL_API` and
`$NBTUNNEL_API_TOKEN` override it (CI, tests).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbtunnel.core.errors import NbtunnelError
from nbtunnel.home import default_home, write_secret_file


class ApiClientError(NbtunnelError):
    """The API refused a call or could not be reached; `status` is 0 for the latter."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message if status == 0 else f"API error {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Login:
    api: str
    token: str


def login_path() -> Path:
    return default_home() / "login.json"


def save_login(api: str, token: str) -> Path:
    path = login_path()
    write_secret_file(path, json.dumps({"api": api.rstrip("/"), "token": token}))
    return path


def load_login() -> Login:
    api, token = os.environ.get("NBTUNNEL_API"), os.environ.get("NBTUNNEL_API_TOKEN")
    if not (api and token):
        try:
            doc = json.loads(login_path().read_text())
            api, token = api or doc["api"], token or doc["token"]
        except (OSError, ValueError, KeyError) as exc:
            raise ApiClientError(0, "not logged in: run `nbtunnel login --api URL --token T` "
                                 "(the edge prints its admin token path)") from exc
    return Login(str(api).rstrip("/"), str(token))


class ApiClient:
    def __init__(self, login: Login, *, timeout: float = 15.0) -> None:
        self.login = login
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str] | None = None) -> Any:
        """The envelope's `result`, or ApiClientError with the API's own message."""
        url = f"{self.login.api}/api/v1{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.login.token}",
            "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["errors"][0]["message"]
            except (ValueError, KeyError, IndexError, TypeError):
                message = raw.decode(errors="replace")[:300] or exc.reason
            raise ApiClientError(exc.code, str(message)) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ApiClientError(0, f"cannot reach the API at {self.login.api}: {exc}") from exc
        return doc.get("result")

    def tunnel(self, ref: str) -> dict[str, Any]:
        """A tunnel by UUID or name (the API resolves both)."""
        return dict(self.call("GET", f"/tunnels/{urllib.parse.quote(ref, safe='')}"))
