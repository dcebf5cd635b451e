"""How an operator gets the first API token: a default account and an admin token file.

On its first start an edge creates the account `default` and writes an admin token to
`<state_dir>/admin-token` (mode 0600). Its value is never printed or logged (stdout usually
ends up in a log): `nbtunnel edge` shows the file's path. More tokens:
`nbtunnel edge token create ACCOUNT` (creates the account if needed).
"""

from __future__ import annotations

from pathlib import Path

from nbtunnel.edge.store import Store
from nbtunnel.home import write_secret_file

DEFAULT_ACCOUNT = "default"
ADMIN_TOKEN_FILE = "admin-token"


def ensure_admin_token(store: Store, state_dir: Path) -> tuple[Path, str | None]:
    """(token file, new token or None when one was made before)."""
    path = state_dir / ADMIN_TOKEN_FILE
    if store.account(name=DEFAULT_ACCOUNT) is not None and path.exists():
        return path, None
    account = store.account(name=DEFAULT_ACCOUNT) or store.create_account(DEFAULT_ACCOUNT)
    token = store.create_api_token(account.tag, "admin")
    write_secret_file(path, token + "\n")
    return path, token


def create_token(store: Store, account_name: str, token_name: str = "cli") -> str:
    account = store.account(name=account_name) or store.create_account(account_name)
    return store.create_api_token(account.tag, token_name)
