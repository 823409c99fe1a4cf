"""TAP services reached through pyvo: one client for the Gaia catalogue and the ESO archive.

`TapClient` runs synchronous ADQL queries (`run_sync`) on one kept-alive HTTP
session whose every request has a timeout, and turns every failure of the
service - unreachable, too slow, an HTTP error, a refusal of the query, an
answer that is no usable VOTable - into a `ServiceError` with
`Code.UNAVAILABLE`, a `reason` detail and a message naming the service
(`label`), never a bare exception: the selector then marks that source
unavailable and goes on. `query_async` runs a query in a worker thread under
an overall deadline.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pyvo
import pyvo.utils.http
import requests
import urllib3.exceptions
from astropy.table import Table
from pyvo.dal.exceptions import DALAccessError, DALQueryError, DALServiceError

from services.shared.errors import Code, ServiceError


class _TimeoutSession(requests.Session):
    """A requests session whose every request has a timeout (requests has no default:
    without one, a silent server holds the caller for ever)."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.timeout = timeout
        self.headers["User-Agent"] = f"bgimages {pyvo.utils.http.USER_AGENT}"

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)


def _causes(err: BaseException) -> list[BaseException]:
    """The error and what it wraps (pyvo keeps the original in `cause`)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        cause = getattr(e, "cause", None)
        todo += [e.__cause__, e.__context__, cause if isinstance(cause, BaseException) else None]
    return seen


# Not urllib3's TimeoutError: its NewConnectionError (a refused connection) is one.
_TIMEOUTS = (requests.Timeout, urllib3.exceptions.ReadTimeoutError, socket.timeout)
_UNREACHABLE = (requests.ConnectionError, urllib3.exceptions.NewConnectionError, ConnectionError)
_FAILURES = (DALAccessError, requests.RequestException, OSError, ValueError, KeyError, TypeError)


def unavailable(err: BaseException, label: str, url: str) -> ServiceError:
    """The ServiceError (UNAVAILABLE) a failed query of the TAP service of `label` is."""
    causes = _causes(err)
    if any(isinstance(e, _TIMEOUTS) for e in causes):
        reason, text = "timeout", "did not answer in time"
    elif isinstance(err, DALQueryError):
        reason, text = "refused", f"refused the query: {err.reason}"
    elif any(isinstance(e, _UNREACHABLE) for e in causes):
        reason, text = "unreachable", "cannot be reached"
    elif isinstance(err, DALServiceError) and err.code:
        reason, text = "http_error", f"answered HTTP {err.code}"
    else:
        reason, text = "malformed", "sent an answer that is not a usable VOTable"
    return ServiceError(Code.UNAVAILABLE, f"{label}: the TAP service {text}", reason=reason, url=url)


class TapClient:
    """Synchronous queries of one TAP service. Made once at start-up (one HTTP session,
    kept alive) and shared. Timeouts: the TCP connection within `connect_timeout_s`, then
    no silence longer than `read_timeout_s` while the answer comes."""

    def __init__(
        self,
        url: str,
        label: str,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.label = label
        self.session = session or _TimeoutSession((connect_timeout_s, read_timeout_s))
        # pyvo asks nothing of the service here (no capabilities for a plain session).
        self._service = pyvo.dal.TAPService(self.url, session=self.session)

    def query(self, adql: str, maxrec: int) -> Table:
        """The rows of `adql` (MAXREC = `maxrec`: a service whose default limit is lower
        would cut the answer)."""
        try:
            return self._service.run_sync(adql, maxrec=maxrec).to_table()
        except _FAILURES as err:
            raise unavailable(err, self.label, self.url) from err

    async def query_async(self, adql: str, maxrec: int, deadline_s: float) -> Table:
        """`query` in a worker thread; past `deadline_s`, UNAVAILABLE (reason `timeout`) at
        once, the thread left to end on its own timeouts."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.query, adql, maxrec), deadline_s)
        except TimeoutError as err:
            raise ServiceError(
                Code.UNAVAILABLE,
                f"{self.label}: the TAP service did not answer in time",
                reason="timeout",
                url=self.url,
            ) from err

    def close(self) -> None:
        self.session.close()
