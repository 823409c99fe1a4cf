"""The tests' p2: the development p2 (services/devp2.py), which serves ESO's p2 API
shapes on loopback, given each test's own world; and `Trap`, a server that must
never be contacted (the SSRF tests point URLs at it and check its log stays empty).
"""

from __future__ import annotations

from aiohttp import web

from services.devp2 import DevP2 as P2StandIn
from services.devp2 import LoopThread, Seen

__all__ = ["P2StandIn", "Seen", "Trap"]


class Trap(LoopThread):
    """Records any request; the gateway must never send it one."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        super().__init__(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _any(self, request: web.Request) -> web.Response:
        self.seen.append(
            Seen(request.method, request.path, request.query_string, request.headers.get("Authorization", ""))
        )
        return web.json_response({"userId": 666, "runId": 666})
