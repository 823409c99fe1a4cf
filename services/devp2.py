"""Development p2: ESO's p2 API on loopback, for `make run` and the tests.

ESO's p2 cannot run here. This DEVELOPMENT SERVER serves, for a world it is
given (services/devworld.py for `make run`, each test's own for the tests),
what the suite and ESO's `p2api` client ask of p2, in the shapes p2 documents:

- `POST <root>/login` (form `username`, `password`): `{"access_token": ...}`,
  as p2api's `ApiConnection(environment, username, password)` logs in;
- `GET /authenticatedUser`: `{"userId": 52052, "username": ..., "firstName": ...}`;
- `GET /obsRuns`: the runs the user owns or is delegated, each with `runId`,
  `progId`, `title`, `period`, `instrument`, `telescope`, `mode`,
  `containerId`, `isToO`, `pi` {...};
- `GET /obsBlocks/{obId}`: `obId`, `itemType`, `name`, `obStatus`, `runId`,
  `target` {`name`, `ra`/`dec` sexagesimal strings, `equinox`, proper
  motions}, `constraints`, `obsDescription`, with an ETag;
- `GET /obsBlocks/{obId}/templates` and `.../templates/{templateId}`: the
  acquisition template with `TEL.TARG.OFFSETALPHA`/`OFFSETDELTA` parameters;
- finding charts: `GET /obsBlocks/{obId}/findingCharts` (the names, in index
  order), `GET .../findingCharts/{index}` (the JPEG), `POST` (raw image/jpeg,
  at most 1 MB, at most 5 per OB, only while the OB's status is - or P),
  `DELETE .../findingCharts/{index}` (numbered from 1; the later ones slide down);
- errors as `{"error": "..."}` with 401 (bad token), 403 (an OB of a run the
  user has no access to), 404 (no such OB).

It runs in a thread with an event loop of its own (so the launcher, sync and
async tests can use it) and records every request it receives. It is never
part of a service: services reach p2 through `P2_API_BASES` only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

MAX_CHART_BYTES = 1 << 20
MAX_CHARTS = 5
# OB statuses under which p2 takes changes to finding charts in service mode.
EDITABLE_STATUSES = ("-", "P")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    query: str
    authorization: str


class LoopThread:
    """An aiohttp app served on loopback from a thread of its own."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self.app = app
        self.port = port or free_port()
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


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=f'{{"error": "{message}"}}', content_type="application/json")


class DevP2(LoopThread):
    """p2's API under `url` = http://127.0.0.1:<port><prefix>; its login beside it."""

    def __init__(self, prefix: str = "/cop/api/v1", port: int = 0) -> None:
        self.prefix = prefix
        self.users: dict[str, dict[str, Any]] = {}  # token -> user
        self.passwords: dict[str, tuple[str, str]] = {}  # username -> (password, token)
        self.runs: dict[int, dict[str, Any]] = {}
        self.members: dict[int, set[int]] = {}  # runId -> userIds (PI and delegates)
        self.obs: dict[int, dict[str, Any]] = {}
        self.templates: dict[int, list[dict[str, Any]]] = {}
        self.charts: dict[int, list[tuple[str, bytes]]] = {}  # obId -> (name, JPEG), index order
        # Fault for the tests: the Nth chart added from now on fails (500); 0: none.
        self.fail_chart_add_at = 0
        self.redirect_to: dict[int, str] = {}  # obId -> Location of a 302
        self.slow: dict[int, float] = {}  # obId -> seconds before answering
        self.seen: list[Seen] = []
        self._next_container = 1538000
        self._next_template = 200000000
        app = web.Application(client_max_size=2 * MAX_CHART_BYTES)
        r = app.router
        r.add_post(self.login_path, self._login)
        r.add_get(prefix + "/authenticatedUser", self._user)
        r.add_get(prefix + "/obsRuns", self._runs)
        r.add_get(prefix + "/obsBlocks/{ob_id:[0-9]+}", self._ob)
        r.add_get(prefix + "/obsBlocks/{ob_id:[0-9]+}/templates", self._templates)
        r.add_get(prefix + "/obsBlocks/{ob_id:[0-9]+}/templates/{tid:[0-9]+}", self._template)
        charts = prefix + "/obsBlocks/{ob_id:[0-9]+}/findingCharts"
        r.add_get(charts, self._chart_names)
        r.add_post(charts, self._add_chart)
        r.add_get(charts + "/{index:[0-9]+}", self._chart)
        r.add_delete(charts + "/{index:[0-9]+}", self._delete_chart)
        app.middlewares.append(self._record)
        super().__init__(app, port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def login_path(self) -> str:
        """p2's login beside its API: /cop/api/v1 -> /cop/api/login."""
        return self.prefix.rsplit("/", 1)[0] + "/login"

    @property
    def login_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.login_path}"

    def requests_to(self, predicate: Callable[[Seen], bool] = lambda s: True) -> list[Seen]:
        return [s for s in self.seen if predicate(s)]

    # ---- the data -----------------------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        token: str,
        first: str = "Ada",
        last: str = "Lovelace",
        username: str = "",
        password: str = "",
    ) -> None:
        """A p2 user whose access token is `token`; with a password, they may also log in
        (by `username` or by their numeric id, as p2 accepts both)."""
        name = username or str(user_id)
        self.users[token] = {
            "userId": user_id,
            "username": name,
            "firstName": first,
            "lastName": last,
            "emailAddress": f"{first.lower()}.{last.lower()}@example.org",
        }
        if password:
            self.passwords[name] = self.passwords[str(user_id)] = (password, token)

    def add_run(
        self,
        run_id: int,
        prog_id: str,
        pi: int,
        delegates: tuple[int, ...] = (),
        instrument: str = "FORS2",
        telescope: str = "UT1",
        pi_name: tuple[str, str] | None = None,
    ) -> None:
        self._next_container += 1
        first, last = pi_name or ("Pat", f"PI-{pi}")
        self.runs[run_id] = {
            "runId": run_id,
            "progId": prog_id,
            "title": f"Programme {prog_id}",
            "period": 60,
            "instrument": instrument,
            "telescope": telescope,
            "mode": "SM",
            "containerId": self._next_container,
            "isToO": False,
            "ipVersion": 110.3,
            "pi": {"firstName": first, "lastName": last, "emailAddress": f"pi{pi}@example.org"},
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
        target_name: str = "",
        blind_offset: tuple[float, float] | None = None,
        item_type: str = "OB",
        status: str = "-",
    ) -> None:
        """An OB whose target is (ra, dec); with a blind offset, (ra, dec) is the
        BOA reference star and the acquisition template carries the offset (arcsec)."""
        instrument = self.runs[run_id]["instrument"]
        self.obs[ob_id] = {
            "obId": ob_id,
            "itemType": item_type,
            "name": name or f"OB {ob_id}",
            "obStatus": status,
            "runId": run_id,
            "instrument": instrument,
            "ipVersion": 110.3,
            "userPriority": 1,
            "exposureTime": 600,
            "executionTime": 1060,
            "parentContainer": {"containerId": self.runs[run_id]["containerId"], "itemType": "Folder"},
            "target": {
                "name": target_name or name or f"target of {ob_id}",
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
            {
                "templateId": acq,
                "templateName": f"{instrument}_img_acq",
                "type": "acquisition",
                "parameters": params,
            },
            {
                "templateId": acq + 1,
                "templateName": f"{instrument}_img_obs_crsplit",
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

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        known = self.passwords.get(str(form.get("username", "")))
        if known is None or not secrets.compare_digest(known[0], str(form.get("password", ""))):
            raise _error(web.HTTPUnauthorized, "invalid username or password")
        return web.json_response({"access_token": known[1], "token_type": "bearer", "expires_in": 3600})

    def _who(self, request: web.Request) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        user = self.users.get(token)
        if user is None:
            raise _error(web.HTTPUnauthorized, "invalid or expired access token")
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
            raise _error(web.HTTPNotFound, f"Observation block {ob_id} not found")
        if user["userId"] not in self.members[ob["runId"]]:
            raise _error(web.HTTPForbidden, "Access denied: you are neither PI nor delegate of this run")
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
        raise _error(web.HTTPNotFound, "template not found")

    # ---- finding charts -----------------------------------------------------------------------

    def _chart_at(self, request: web.Request) -> tuple[list[tuple[str, bytes]], int]:
        ob = self._visible_ob(request)
        charts = self.charts.setdefault(ob["obId"], [])
        index = int(request.match_info["index"])
        if not 1 <= index <= len(charts):
            raise _error(web.HTTPNotFound, f"finding chart {index} not found")
        return charts, index

    def _editable(self, ob: dict[str, Any]) -> None:
        if ob["obStatus"] not in EDITABLE_STATUSES:
            raise _error(web.HTTPConflict, f"OB status {ob['obStatus']} does not allow changes")

    async def _chart_names(self, request: web.Request) -> web.Response:
        ob = self._visible_ob(request)
        return web.json_response([name for name, _ in self.charts.get(ob["obId"], [])])

    async def _chart(self, request: web.Request) -> web.Response:
        charts, index = self._chart_at(request)
        return web.Response(body=charts[index - 1][1], content_type="image/jpeg")

    async def _add_chart(self, request: web.Request) -> web.Response:
        ob = self._visible_ob(request)
        self._editable(ob)
        if request.content_type != "image/jpeg":
            raise _error(web.HTTPUnsupportedMediaType, "a finding chart is image/jpeg")
        data = await request.read()
        if len(data) > MAX_CHART_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_CHART_BYTES,
                actual_size=len(data),
                text='{"error": "a finding chart is at most 1 MB"}',
                content_type="application/json",
            )
        if not data.startswith(b"\xff\xd8"):
            raise _error(web.HTTPBadRequest, "not a JPEG image")
        if self.fail_chart_add_at:
            self.fail_chart_add_at -= 1
            if not self.fail_chart_add_at:
                return web.json_response({"error": "development p2: failing as asked"}, status=500)
        charts = self.charts.setdefault(ob["obId"], [])
        if len(charts) >= MAX_CHARTS:
            raise _error(web.HTTPBadRequest, f"at most {MAX_CHARTS} finding charts per OB")
        m = re.search(r'filename="([^"]*)"', request.headers.get("Content-Disposition", ""))
        charts.append((m.group(1) if m else f"fc{len(charts) + 1}.jpg", data))
        return web.Response(
            status=201, headers={"ETag": f'"{len(charts)}"', "Content-Type": "application/json"}
        )

    async def _delete_chart(self, request: web.Request) -> web.Response:
        charts, index = self._chart_at(request)
        self._editable(self._visible_ob(request))
        del charts[index - 1]  # the later charts slide down
        # An empty answer still names a type: p2api reads the Content-Type of every answer.
        return web.Response(status=204, headers={"Content-Type": "text/plain"})
