"""The origin as the stream proxy sees it when a tunnel has access control or an inspector.

`GuardedOrigin` has the origin client's `request`/`websocket` and wraps them: the access
check first (a refusal is answered here, the origin never sees the request), then the
inspector's recording around the real call. Bodies still stream through chunk by chunk.
`replay` re-sends a captured request to its origin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from nbtunnel.connector.access_control import AccessControl, Refusal
from nbtunnel.connector.inspector import Capture, Inspector, Recorder
from nbtunnel.connector.origin import OriginClient, OriginError, OriginResponse, OriginUpgrade
from nbtunnel.core.httpmeta import HttpRequestHead


class ReplayError(OriginError):
    """A capture that cannot be replayed (unknown, streamed, or its body was cut)."""


class GuardedOrigin:
    """OriginClient with access control and/or an inspector in front (either may be None)."""

    def __init__(self, origin: OriginClient, access: AccessControl | None,
                 inspector: Inspector | None) -> None:
        self.origin = origin
        self.access = access
        self.inspector = inspector

    async def request(self, service: str, head: HttpRequestHead,
                      body: AsyncIterator[bytes] | None, **opts: Any) -> OriginResponse:
        if self.access is not None:
            head, refusal = self.access.check(head)
            if refusal is not None:
                return _answer(refusal)
        if self.inspector is None:
            return await self.origin.request(service, head, body, **opts)
        return await self._recorded(service, head, body, None, opts)

    async def websocket(self, service: str, head: HttpRequestHead,
                        **opts: Any) -> OriginUpgrade | OriginResponse:
        if self.access is not None:
            head, refusal = self.access.check(head)
            if refusal is not None:
                return _answer(refusal)
        result = await self.origin.websocket(service, head, **opts)
        if self.inspector is not None:  # the head only: a WebSocket is never buffered
            rec = self.inspector.start(head, service)
            rec.response_head(result.status, result.headers)
            self.inspector.finish(rec)
        return result

    async def replay(self, capture_id: int, **opts: Any) -> Capture:
        """Send a captured request again; returns the new capture (replay_of set)."""
        assert self.inspector is not None
        old = self.inspector.get(capture_id)
        if old is None:
            raise ReplayError(f"no captured request #{capture_id} (only the last "
                              f"{self.inspector.keep} are kept)")
        if not old.replayable:
            why = ("its body was larger than the part kept" if old.request_truncated
                   else "it was a stream (SSE or WebSocket)")
            raise ReplayError(f"request #{capture_id} cannot be replayed: {why}")
        body = _once(old.request_body) if old.request_size else None
        resp = await self._recorded(old._service, old.head(), body, old.id, opts)
        recorded = resp.body
        assert isinstance(recorded, _RecordedBody)
        async for _ in recorded:  # read it all: the capture keeps the first KiBs
            pass
        await resp.aclose()
        assert recorded.finished is not None
        return self.inspector.capture(recorded.finished)

    async def _recorded(self, service: str, head: HttpRequestHead,
                        body: AsyncIterator[bytes] | None, replay_of: int | None,
                        opts: dict[str, Any]) -> OriginResponse:
        assert self.inspector is not None
        rec = self.inspector.start(head, service, replay_of)
        try:
            resp = await self.origin.request(
                service, head, None if body is None else rec.tee_request(body), **opts)
        except BaseException as exc:
            rec.error = str(exc) or type(exc).__name__
            self.inspector.finish(rec)
            raise
        rec.response_head(resp.status, resp.headers)
        return OriginResponse(resp.status, resp.headers, _RecordedBody(resp, rec,
                                                                       self.inspector))


def _answer(refusal: Refusal) -> OriginResponse:
    return OriginResponse(refusal.status, refusal.headers, refusal.chunks())


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class _RecordedBody:
    """The origin's body, passed through; the capture is finished when it ends or closes."""

    def __init__(self, resp: OriginResponse, rec: Recorder, inspector: Inspector) -> None:
        self._resp, self._rec, self._inspector = resp, rec, inspector
        self._it = resp.body.__aiter__()
        self._done = False
        self.finished: Recorder | None = None

    def __aiter__(self) -> _RecordedBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._it.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._rec.error = str(exc) or type(exc).__name__
            self._finish()
            raise
        self._rec.saw_response_chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        if not self._done:
            self._rec.error = self._rec.error or "response not read to the end"
            self._finish()
        await self._resp.aclose()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self.finished = self._inspector.finish(self._rec)
