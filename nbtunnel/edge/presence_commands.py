"""Commands between edges over Redis: configuration pushes and connection closes.

An edge asks every other edge holding a tunnel by publishing on `cmd:<edge id>`; the asked
edge runs the command on its own connections and answers on a list `reply:<uuid>` that the
asker BLPOPs (a list, so an answer cannot be missed). A mixin of `RedisPresence`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from nbtunnel.edge.config_push import PUSH_TIMEOUT
from nbtunnel.edge.presence import CloseLocal, P, PushLocal

log = logging.getLogger("nbtunnel.edge.presence")

REPLY_TIMEOUT = PUSH_TIMEOUT + 2.0


class Commands:
    """Asking the other edges, and answering them (needs `r`, `edge_id`, `_holders`)."""

    r: Any
    edge_id: str
    _push_local: PushLocal
    _close_local: CloseLocal

    async def _holders(self, tunnel_id: uuid.UUID, *, fresh: bool = False) -> list[str]:
        raise NotImplementedError

    async def _ask(self, tunnel_id: uuid.UUID, command: dict[str, Any]) -> list[tuple[str, Any]]:
        """Send `command` to every other edge holding the tunnel; (edge id, answer or None)."""
        targets = [e for e in await self._holders(tunnel_id, fresh=True) if e != self.edge_id]

        async def one(edge_id: str) -> tuple[str, Any]:
            reply = f"{P}reply:{uuid.uuid4()}"
            sent = await self.r.publish(P + "cmd:" + edge_id, json.dumps({**command,
                                                                          "reply": reply}))
            if not sent:
                return edge_id, None
            got = await self.r.blpop([reply], timeout=REPLY_TIMEOUT)
            return edge_id, None if got is None else json.loads(got[1])

        return list(await asyncio.gather(*(one(e) for e in targets)))

    async def push_remote(self, tunnel_id: uuid.UUID, version: int,
                          config: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        answers = await self._ask(tunnel_id, {"op": "push", "tunnel": str(tunnel_id),
                                              "version": version, "config": config.decode()})
        for edge_id, answer in answers:
            if answer is None:
                out.append({"connector_id": None, "conn_index": -1, "applied_version": -1,
                            "edge_id": edge_id,
                            "error": f"edge {edge_id} did not answer the push in time"})
            else:
                out.extend({**r, "edge_id": edge_id} for r in answer)
        return out

    async def close_remote(self, tunnel_id: uuid.UUID, connector_id: str | None,
                           why: str) -> int:
        answers = await self._ask(tunnel_id, {"op": "close", "tunnel": str(tunnel_id),
                                              "connector": connector_id, "why": why})
        return sum(int(a or 0) for _, a in answers)

    async def _run_command(self, raw: str) -> None:
        try:
            cmd = json.loads(raw)
            tid = uuid.UUID(cmd["tunnel"])
            if cmd["op"] == "push":
                answer: Any = await self._push_local(tid, int(cmd["version"]),
                                                     str(cmd["config"]).encode())
            elif cmd["op"] == "close":
                answer = self._close_local(tid, cmd.get("connector"), str(cmd.get("why", "")))
            else:
                return
            pipe = self.r.pipeline(transaction=False)
            pipe.rpush(cmd["reply"], json.dumps(answer))
            pipe.expire(cmd["reply"], 30)
            await pipe.execute()
        except Exception:
            log.exception("presence command failed: %.200s", raw)

