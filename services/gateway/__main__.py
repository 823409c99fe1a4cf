"""`python -m services.gateway [serve]`: serve HTTP on GATEWAY_PORT (shared start-up, as every service)."""

from __future__ import annotations

import argparse
import ctypes
import sys

from aiohttp import web

from services.gateway.app import create_app
from services.gateway.problems import quiet_malformed_requests
from services.shared import startup
from services.shared.settings import GatewaySettings


class HttpService:
    """The gateway's aiohttp app behind a TCP site, started and stopped as a gRPC service is."""

    def __init__(self, app: web.Application, settings: GatewaySettings) -> None:
        # Lingering lets a client that is still sending read an early 413; uploads in
        # flight get SHUTDOWN_GRACE_S to finish once the listener is closed.
        self.runner = web.AppRunner(
            app, access_log=None, handler_cancellation=False, shutdown_timeout=settings.shutdown_grace_s
        )
        self.host, self._port = settings.bind_host, settings.port

    @property
    def port(self) -> int:
        addresses = self.runner.addresses
        return int(addresses[0][1]) if addresses else self._port

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self._port, backlog=512).start()

    async def stop(self, grace_s: float) -> None:
        # The runner was given the same grace (shutdown_timeout) when it was made.
        await self.runner.cleanup()


async def make(settings: GatewaySettings) -> HttpService:
    quiet_malformed_requests()
    return HttpService(create_app(settings), settings)


def _return_big_buffers_to_the_os() -> None:
    """Upload blocks (1 MB) are malloc'd and freed constantly. A fixed mmap threshold
    makes glibc map and unmap them, instead of raising the threshold and keeping
    freed blocks in its heap, so resident memory stays flat during long uploads."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 512 << 10)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.parse_args(argv)
    _return_big_buffers_to_the_os()
    return startup.run("gateway", GatewaySettings, make)


if __name__ == "__main__":
    sys.exit(main())
