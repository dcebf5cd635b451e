"""One owned handler task per accepted tunnel connection, for every listener (QUIC, HTTP/2).

The handler owns its connection: when it returns or fails, the connection is closed. A
listener's ``close()`` cancels every handler and awaits it, so nothing outlives the listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from nbtunnel.transport.errors import TransportError

log = logging.getLogger("nbtunnel.transport")


class _Closable(Protocol):
    @property
    def remote_address(self) -> tuple[str, int]: ...

    def close(self, error_code: int = 0, reason: str = "") -> None: ...


C = TypeVar("C", bound=_Closable)


class ConnectionHandlers(Generic[C]):
    """Runs ``on_connection(conn)`` as a task per connection; see the module docstring."""

    def __init__(self, on_connection: Callable[[C], Awaitable[None]]) -> None:
        self._on_connection = on_connection
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, conn: C) -> None:
        task = asyncio.get_running_loop().create_task(self._run(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: C) -> None:
        try:
            await self._on_connection(conn)
        except TransportError as exc:
            log.debug("connection handler for %s ended: %s", conn.remote_address, exc)
        except Exception:
            log.exception("connection handler for %s failed", conn.remote_address)
        finally:
            conn.close(0, "")  # the handler owns the connection: when it returns, it ends

    async def aclose(self) -> None:
        """Cancel every handler and wait for it to finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
