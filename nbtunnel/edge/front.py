"""The public HTTP/1.1 front: routes eyeball requests by Host to a tunnel's data streams.

One task per client connection reads bytes, turns them into request events with the
Sans-I/O `RequestReader` and handles the requests in order (pipelined ones included). Each
proxied request gets its own data stream on one of the tunnel's registered connections (the
least busy one, registry.py). Bodies stream both ways with back-pressure. Every wait has a
deadline (`FrontLimits`): the whole head, each silence in a body and its average rate
(body_rate.py), the connector's answer (inside the exchange), a client that takes no byte of
its response (response_writer.py), and the idle time between requests.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from nbtunnel.edge.body_rate import BodyRate
from nbtunnel.edge.clock import Clock
from nbtunnel.edge.deadline import Deadline
from nbtunnel.edge.handler import RequestHandler
from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.listener import ClientReader, TcpListener
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.request_reader import END, Body, Event, Refusal, Request, RequestReader
from nbtunnel.edge.response_writer import ResponseWriter, SendBatch
from nbtunnel.edge.stores.base import ControlStore

log = logging.getLogger("nbtunnel.edge.front")

Headers = list[tuple[bytes, bytes]]
ApiHandler = Callable[["Request", bytes], Awaitable[tuple[int, Headers, bytes]]]

READ_SIZE = 65536


class RemoteRouter(Protocol):
    """Connections of a tunnel through another edge (`peering.PeerClient`)."""

    async def pick(self, tunnel_id: uuid.UUID) -> LiveConnection | None: ...

    def pick_cached(self, tunnel_id: uuid.UUID,
                    exclude: LiveConnection | None = None) -> LiveConnection | None: ...


class PublicFront:
    """HTTP/1.1 listener that maps hostnames to tunnels and proxies through data streams."""

    def __init__(
        self,
        store: ControlStore,
        registry: Registry,
        *,
        location: str = "LOC",
        api: ApiHandler | None = None,
        api_hosts: frozenset[str] = frozenset(),
        limits: FrontLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.location = location
        self.api = api
        self.api_hosts = api_hosts
        self.limits = limits or FrontLimits()
        self.clock = clock or Clock()  # the body-rate check's time; tests inject theirs
        self._listener = TcpListener(self._serve_client)
        self.requests_total = 0
        self.statuses: dict[int, int] = {}  # answered requests by status (edge/metrics.py)
        self.remote: RemoteRouter | None = None  # set when other edges can serve a tunnel
        # set by the HTTPS front with --https-redirect: Location for a plain-HTTP request
        self.https_redirect: Callable[[Request], str | None] | None = None
        self._served: set[asyncio.Task[None]] = set()  # connections handed in by serve()
        self.batch = SendBatch()  # the last sends of kept-alive responses (response_writer.py)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        await self._listener.start(host, port, reuse_port=reuse_port)

    @property
    def sockname(self) -> tuple[str, int]:
        return self._listener.sockname

    @property
    def listener(self) -> TcpListener:
        return self._listener

    async def close(self) -> None:
        await self._listener.close()
        for task in list(self._served):
            task.cancel()
        await asyncio.gather(*self._served, return_exceptions=True)

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def new_ray(self) -> str:
        # a ray names a request in logs and pages; it is no secret (no getrandom() per request)
        return f"{random.getrandbits(64):016x}-{self.location}"

    async def serve(self, reader: ClientReader, writer: asyncio.StreamWriter,
                    scheme: str = "http") -> None:
        """Serve one HTTP/1.1 client connection another listener accepted (the HTTPS front's,
        after TLS); close() cancels and awaits it like our own."""
        task = asyncio.current_task()
        assert task is not None
        self._served.add(task)
        try:
            await self._serve_client(reader, writer, scheme)
        except asyncio.CancelledError:
            pass  # close() cancelled us; end quietly (asyncio's server reads our result)
        finally:
            self._served.discard(task)
            writer.close()

    def _serve_client(self, reader: ClientReader, writer: asyncio.StreamWriter,
                      scheme: str = "http") -> Coroutine[Any, Any, None]:
        # the connection's own coroutine, not one wrapping it: one frame less to pass through
        # each time the connection's task resumes (twice per request)
        peer = writer.get_extra_info("peername")
        return _ClientConnection(self, reader, writer, peer[0] if peer else "", scheme).serve()


class _ClientConnection:
    """The requests of one visitor connection, in order."""

    def __init__(self, front: PublicFront, reader: ClientReader,
                 writer: asyncio.StreamWriter, client_ip: str, scheme: str = "http") -> None:
        self.front = front
        self.scheme = scheme
        self.limits = front.limits
        self.reader = reader
        self.writer = writer
        self.client_ip = client_ip
        self.parser = RequestReader(max_head_bytes=self.limits.max_head_bytes,
                                    max_fields=self.limits.max_fields, client_ip=client_ip,
                                    scheme=scheme)
        self.events: deque[Event] = deque()
        self.handler: RequestHandler | None = None
        self.rate: BodyRate | None = None  # the current request body's rate check
        self._head_deadline: float | None = None
        self.loop = asyncio.get_running_loop()
        self.deadline = Deadline()  # every wait of this connection's task (deadline.py)

    async def serve(self) -> None:
        try:
            await self.run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # one broken client must never take the front down
            log.exception("client connection failed")
        finally:
            await self.release()

    async def run(self) -> None:
        events = self.events
        while True:
            if not events:
                if not await self._read():
                    return
                continue
            event = events.popleft()
            if event is END:
                handler = self.handler
                assert handler is not None
                if handler.req.upgrade and self.parser.upgraded_rest is not None:
                    self.handler = None
                    await handler.run_upgraded(self.reader, self.parser.upgraded_rest)
                    return
                keep = await handler.finish_watching_client(self.reader, self.deadline)
                self.handler = None
                if not keep:  # also when the client went away (the exchange was aborted)
                    return
            elif isinstance(event, Request):
                front = self.front
                front.requests_total += 1
                event.ray = front.new_ray()
                self.handler = RequestHandler(front, event, self.writer, self.deadline)
                self.rate = None
                await self.handler.begin()
            elif isinstance(event, Body):
                assert self.handler is not None
                await self.handler.body(event.data)
            else:
                assert isinstance(event, Refusal)
                await self._refuse(event.status, event.detail)
                return

    async def _read(self) -> bool:
        """Read and parse more bytes under the deadline that applies now; False: stop."""
        now = self.loop.time()
        if self.handler is not None:
            when, why = now + self.limits.body_timeout, "body"
        elif self._head_deadline is not None:
            when, why = self._head_deadline, "head"
        else:
            when, why = now + self.limits.keepalive_timeout, "idle"
        rate = None
        if why == "body":  # a request with a body (created here: a GET never needs one)
            rate = self.rate = self.rate or BodyRate(self.limits.min_body_rate,
                                                     self.limits.body_rate_grace)
            rate.waiting(self.front.clock.monotonic())
        deadline = self.deadline
        deadline.arm(when)
        try:
            data = await self.reader.read(READ_SIZE)
        except ConnectionError:
            return False  # a reset client is a client gone: release() aborts its exchange
        except asyncio.CancelledError:
            if not deadline.expired():
                raise
            if why == "head":
                await self._refuse(408, "The request head took too long.")
            elif why == "body":
                await self._refuse(408, "The request body stalled.")
            return False
        finally:
            deadline.disarm()
        if not data:
            return False
        too_slow = rate.received(len(data), self.front.clock.monotonic()) if rate else None
        parser = self.parser
        self.events.extend(parser.feed(data))
        if parser.in_head and self.handler is None:
            if self._head_deadline is None:  # the head's deadline runs from its first byte
                self._head_deadline = self.loop.time() + self.limits.head_timeout
        else:
            self._head_deadline = None
        if too_slow is not None and parser.in_message:
            await self._refuse(408, too_slow)
            return False
        return True

    async def _refuse(self, status: int, detail: str) -> None:
        """Answer with an edge page and close (the connection is not reusable after it)."""
        handler, self.handler = self.handler, None
        if handler is not None:
            await handler.refuse(status, detail)
        else:
            self.front.count(status)
            out = ResponseWriter(self.writer, ray=self.front.new_ray(), keep_alive=False,
                                 deadline=self.deadline, send_timeout=self.limits.send_timeout,
                                 batch=self.front.batch)
            out.page(status, detail)
            await out.end()
        if status != 408:
            log.info("refused a request from %s: %d %s", self.client_ip, status, detail)

    async def release(self) -> None:
        self.front.batch.release(self.writer.transport)  # before the connection closes
        self.deadline.close()
        if self.handler is not None:
            await self.handler.client_gone()
            self.handler = None
