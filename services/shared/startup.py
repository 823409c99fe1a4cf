"""How every service starts: `python -m services.<name>` -> its `__main__` -> `run`.

`run` loads the settings (a bad one ends the process with a message naming the
variable), configures logging, builds the service, starts it, and on SIGTERM or
SIGINT stops it with a grace period (SHUTDOWN_GRACE_S) for calls in flight, as
grpc's async_greeter_server_with_graceful_shutdown example does. The gRPC
services are a `GrpcService` (health, reflection, the credential check, the
dependency watchers); the gateway brings its own HTTP server with the same
`start`/`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from services.shared import logs
from services.shared.grpc_edge import GrpcServer, follow_health
from services.shared.settings import (
    CatalogSettings,
    Common,
    ProcessorSettings,
    SettingsError,
    ValidatorSettings,
    load,
)

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Common)
EXIT_BAD_SETTINGS = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Service(Protocol):
    """What `run` starts and stops."""

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None:
        """Stops taking calls, lets those in flight finish within `grace_s`, frees what it holds."""


def load_or_exit(name: str, cls: type[S]) -> S:
    """The service's settings from the environment; a bad one ends the process
    (exit status 2) with one line naming the variable."""
    try:
        return load(cls)
    except SettingsError as err:
        print(f"{name}: cannot start: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from None


def configure(name: str, cls: type[S]) -> S:
    """The settings, and logging set up from them (LOG_LEVEL, LOG_FORMAT)."""
    settings = load_or_exit(name, cls)
    logs.configure(name, settings.log_level, settings.log_format)
    return settings


def run(name: str, cls: type[S], make: Callable[[S], Awaitable[Service]]) -> int:
    """Serves until SIGTERM or SIGINT: `python -m services.<name>` of every service."""
    settings = configure(name, cls)
    asyncio.run(serve(name, settings, make))
    return 0


async def serve(
    name: str, settings: S, make: Callable[[S], Awaitable[Service]], stop: asyncio.Event | None = None
) -> None:
    """Builds and starts the service, waits for `stop` (set by SIGTERM/SIGINT), stops it gracefully."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        service = await make(settings)
        try:
            await service.start()
            log.info("%s listening", name, extra={"host": settings.bind_host, "port": service.port})
            await stop.wait()
            log.info("%s stopping", name, extra={"grace_s": settings.shutdown_grace_s})
        finally:
            await service.stop(settings.shutdown_grace_s)
        log.info("%s stopped", name)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


class GrpcService:
    """A GrpcServer with what lives as long as it: watchers that keep readiness in
    step with a dependency, background rounds, and what to close once it stopped."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self._rounds: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._closers: list[Callable[[], Any]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def of(cls, settings: ValidatorSettings | ProcessorSettings | CatalogSettings) -> GrpcService:
        """One listening on the settings' BIND_HOST and port, checking SERVICE_TOKEN."""
        return cls(
            GrpcServer(
                settings.bind_host,
                settings.port,
                settings.service_token.get_secret_value(),
                grace_s=settings.shutdown_grace_s,
            )
        )

    @property
    def port(self) -> int:
        return self.server.port

    def watch(self, check: Callable[[], Awaitable[bool]], interval_s: float, what: str) -> None:
        """NOT_SERVING while `check` fails (the store, the database), from start to stop."""
        self._rounds.append(lambda: follow_health(self.server, check, interval_s, what))

    def background(self, round_: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A task run from start to stop (culling, the sweep)."""
        self._rounds.append(round_)

    def on_stop(self, close: Callable[[], Any]) -> None:
        """Called (and awaited, when it returns an awaitable) once the server stopped."""
        self._closers.append(close)

    async def start(self) -> None:
        await self.server.start()
        self._tasks = [asyncio.create_task(r()) for r in self._rounds]

    async def stop(self, grace_s: float | None = None) -> None:
        # The watchers end first, so none turns readiness back to SERVING during the grace.
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.server.stop(grace_s)
        finally:
            for close in self._closers:
                result = close()
                if inspect.isawaitable(result):
                    await result
