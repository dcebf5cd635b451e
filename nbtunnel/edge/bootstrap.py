"""How an operator gets the first API token: a default account and an admin token file.

On its first start an edge creates the account `default` and writes an admin token to
`<state_dir>/admin-token` (mode 0600). Its value is never printed or logged (stdout usually
ends up in a log): `nbtunnel edge` shows the file's path. More tokens:
`nbtunnel edge token create ACCOUNT` (creates the account if needed).
"""

from __future__ import annotations

from pathlib import Path

from nbtunnel.edge.stores.base import AccountRecord, ControlStore, StoreError
from nbtunnel.home import write_secret_file

DEFAULT_ACCOUNT = "default"
ADMIN_TOKEN_FILE = "admin-token"


async def ensure_admin_token(store: ControlStore, state_dir: Path) -> tuple[Path, str | None]:
    """(token file, new token or None when one was made before)."""
    path = state_dir / ADMIN_TOKEN_FILE
    if await store.account(name=DEFAULT_ACCOUNT) is not None and path.exists():
        return path, None
    account = await _account(store, DEFAULT_ACCOUNT)
    token = await store.create_api_token(account.tag, "admin")
    write_secret_file(path, token + "\n")
    return path, token


async def create_token(store: ControlStore, account_name: str, token_name: str = "cli") -> str:
    account = await _account(store, account_name)
    return await store.create_api_token(account.tag, token_name)


async def _account(store: ControlStore, name: str) -> AccountRecord:
    """The named account, created if needed (another edge may create it at the same time)."""
    found = await store.account(name=name)
    if found is not None:
        return found
    try:
        return await store.create_account(name)
    except StoreError:
        found = await store.account(name=name)
        if found is None:
            raise
        return found
