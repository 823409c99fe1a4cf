"""A stand-in for ESO's p2 API on loopback, serving the JSON shapes of the real one.

p2 cannot run here. This serves what the p2api face asks, in the shapes the p2
API documents and p2api's callers read (`api.getUser()`, `api.getRuns()`,
`api.getOB()`, `api.getTemplates()`, `api.getTemplate()`):

- `GET /authenticatedUser`: `{"userId": 52052, "username": ..., "firstName": ...}`;
- `GET /obsRuns`: the runs the user owns or is delegated, each with `runId`,
  `progId`, `title`, `period`, `instrument`, `telescope`, `mode`,
  `containerId`, `isToO`, `pi` {...};
- `GET /obsBlocks/{obId}`: `obId`, `itemType`, `name`, `obStatus`, `runId`,
  `target` {`name`, `ra`/`dec` sexagesimal strings, `equinox`, proper
  motions}, `constraints`, `obsDescription`, with an ETag;
- `GET /obsBlocks/{obId}/templates` and `.../templates/{templateId}`: the
  acquisition template with `TEL.TARG.OFFSETALPHA`/`OFFSETDELTA` parameters;
- errors as `{"error": "..."}` with 401 (bad token), 403 (an OB of a run the
  user has no access to), 404 (no such OB).

It runs in its own thread and event loop (so sync and async tests can use it)
and records every request it receives. `Trap` is a server that must never be
contacted: the SSRF tests point URLs at it and check its log stays empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.conftest import free_port


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    query: str
    authorization: str


class _LoopThread:
    """An aiohttp app served from a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class Trap(_LoopThread):
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


class P2StandIn(_LoopThread):
    """p2's API under `<url>` = http://127.0.0.1:<port><prefix>."""

    def __init__(self, prefix: str = "/cop/api/v1") -> None:
        self.prefix = prefix
        self.users: dict[str, dict[str, Any]] = {}  # token -> user
        self.runs: dict[int, dict[str, Any]] = {}
        self.members: dict[int, set[int]] = {}  # runId -> userIds (PI and delegates)
        self.obs: dict[int, dict[str, Any]] = {}
        self.templates: dict[int, list[dict[str, Any]]] = {}
        self.redirect_to: dict[int, str] = {}  # obId -> Location of a 302
        self.slow: dict[int, float] = {}  # obId -> seconds before answering
        self.seen: list[Seen] = []
        self._next_container = 1538000
        self._next_template = 200000000
        app = web.Application()
        r = app.router
        r.add_get(prefix + "/authenticatedUser", self._user)
        r.add_get(prefix + "/obsRuns", self._runs)
        r.add_get(prefix + "/obsBlocks/{ob_id:[0-9]+}", self._ob)
        r.add_get(prefix + "/obsBlocks/{ob_id:[0-9]+}/templates", self._templates)
        r.add_get(prefix + "/obsBlocks/{ob_id:[0-9]+}/templates/{tid:[0-9]+}", self._template)
        app.middlewares.append(self._record)
        super().__init__(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def requests_to(self, predicate: Callable[[Seen], bool] = lambda s: True) -> list[Seen]:
        return [s for s in self.seen if predicate(s)]

    # ---- the data -----------------------------------------------------------------------------

    def add_user(self, user_id: int, token: str, first: str = "Ada", last: str = "Lovelace") -> None:
        self.users[token] = {
            "userId": user_id,
            "username": str(user_id),
            "firstName": first,
            "lastName": last,
            "emailAddress": f"{first.lower()}.{last.lower()}@example.org",
        }

    def add_run(self, run_id: int, prog_id: str, pi: int, delegates: tuple[int, ...] = ()) -> None:
        self._next_container += 1
        self.runs[run_id] = {
            "runId": run_id,
            "progId": prog_id,
            "title": f"Programme {prog_id}",
            "period": 60,
            "instrument": "FORS2",
            "telescope": "UT1",
            "mode": "SM",
            "containerId": self._next_container,
            "isToO": False,
            "ipVersion": 110.3,
            "pi": {"firstName": "Pat", "lastName": f"PI-{pi}", "emailAddress": f"pi{pi}@example.org"},
        }
        self.members[run_id] = {pi, *delegates}

    def add_delegate(self, run_id: int, user_id: int) -> None:
        self.members[run_id].add(user_id)

    def add_ob(
        self,
        ob_id: int,
        run_id: int,
        ra: str,
        dec: str,
        *,
        name: str = "",
        blind_offset: tuple[float, float] | None = None,
        item_type: str = "OB",
    ) -> None:
        """An OB whose target is (ra, dec); with a blind offset, (ra, dec) is the
        BOA reference star and the acquisition template carries the offset."""
        self.obs[ob_id] = {
            "obId": ob_id,
            "itemType": item_type,
            "name": name or f"OB {ob_id}",
            "obStatus": "-",
            "runId": run_id,
            "instrument": "FORS2",
            "ipVersion": 110.3,
            "userPriority": 1,
            "exposureTime": 600,
            "executionTime": 1060,
            "parentContainer": {"containerId": self.runs[run_id]["containerId"], "itemType": "Folder"},
            "target": {
                "name": name or f"target of {ob_id}",
                "ra": ra,
                "dec": dec,
                "equinox": "J2000",
                "epoch": 2000.0,
                "properMotionRa": 0.0,
                "properMotionDec": 0.0,
                "differentialRa": 0.0,
                "differentialDec": 0.0,
            },
            "constraints": {"name": "No name", "airmass": 2.0, "skyTransparency": "Variable, thin cirrus"},
            "obsDescription": {"name": "", "userComments": "", "instrumentComments": ""},
        }
        self._next_template += 2
        acq = self._next_template
        params: list[dict[str, Any]] = [
            {"name": "TEL.AG.GUIDESTAR", "type": "keyword", "value": "CATALOGUE"},
            {"name": "TEL.ROT.OFFANGLE", "type": "number", "value": 0.0},
        ]
        if blind_offset is not None:
            params += [
                {"name": "TEL.TARG.OFFSETALPHA", "type": "number", "value": blind_offset[0]},
                {"name": "TEL.TARG.OFFSETDELTA", "type": "number", "value": blind_offset[1]},
            ]
        self.templates[ob_id] = [
            {"templateId": acq, "templateName": "FORS2_img_acq", "type": "acquisition", "parameters": params},
            {
                "templateId": acq + 1,
                "templateName": "FORS2_img_obs_crsplit",
                "type": "science",
                "parameters": [{"name": "DET.WIN1.UIT1", "type": "number", "value": 60.0}],
            },
        ]

    # ---- the API ------------------------------------------------------------------------------

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        self.seen.append(
            Seen(request.method, request.path, request.query_string, request.headers.get("Authorization", ""))
        )
        response: web.StreamResponse = await handler(request)
        return response

    def _who(self, request: web.Request) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        user = self.users.get(token)
        if user is None:
            raise web.HTTPUnauthorized(
                text='{"error": "invalid or expired access token"}', content_type="application/json"
            )
        return user

    def _runs_of(self, user_id: int) -> list[dict[str, Any]]:
        return [run for rid, run in sorted(self.runs.items()) if user_id in self.members[rid]]

    async def _user(self, request: web.Request) -> web.Response:
        return web.json_response(self._who(request))

    async def _runs(self, request: web.Request) -> web.Response:
        user = self._who(request)
        return web.json_response(self._runs_of(user["userId"]))

    def _visible_ob(self, request: web.Request) -> dict[str, Any]:
        user = self._who(request)
        ob_id = int(request.match_info["ob_id"])
        ob = self.obs.get(ob_id)
        if ob is None:
            raise web.HTTPNotFound(
                text=f'{{"error": "Observation block {ob_id} not found"}}', content_type="application/json"
            )
        if user["userId"] not in self.members[ob["runId"]]:
            raise web.HTTPForbidden(
                text='{"error": "Access denied: you are neither PI nor delegate of this run"}',
                content_type="application/json",
            )
        return ob

    async def _ob(self, request: web.Request) -> web.Response:
        ob_id = int(request.match_info["ob_id"])
        if ob_id in self.slow:
            await asyncio.sleep(self.slow[ob_id])
        if ob_id in self.redirect_to:
            raise web.HTTPFound(self.redirect_to[ob_id])
        ob = self._visible_ob(request)
        return web.json_response(ob, headers={"ETag": f'"{int(time.time())}"'})

    async def _templates(self, request: web.Request) -> web.Response:
        ob_id = int(request.match_info["ob_id"])
        if ob_id in self.redirect_to:
            raise web.HTTPFound(self.redirect_to[ob_id])
        self._visible_ob(request)
        listing = [
            {"templateId": t["templateId"], "templateName": t["templateName"], "type": t["type"]}
            for t in self.templates.get(ob_id, [])
        ]
        return web.json_response(listing, headers={"ETag": '"1"'})

    async def _template(self, request: web.Request) -> web.Response:
        ob_id = int(request.match_info["ob_id"])
        self._visible_ob(request)
        tid = int(request.match_info["tid"])
        for tpl in self.templates.get(ob_id, []):
            if tpl["templateId"] == tid:
                return web.json_response(tpl, headers={"ETag": '"1"'})
        raise web.HTTPNotFound(text='{"error": "template not found"}', content_type="application/json")
