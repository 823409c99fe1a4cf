"""Starts the gateway: `python -m services.gateway` serves HTTP on GATEWAY_PORT."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal

from aiohttp import web

from services.gateway.app import create_app
from services.gateway.problems import quiet_malformed_requests
from services.shared import logs
from services.shared.settings import GatewaySettings, load

log = logging.getLogger("services.gateway")


async def serve(settings: GatewaySettings) -> None:
    app = create_app(settings)
    quiet_malformed_requests()
    # Lingering lets a client that is still sending read an early 413.
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=False, shutdown_timeout=settings.shutdown_grace_s
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.bind_host, settings.port, backlog=512)
    await site.start()
    log.info("gateway listening", extra={"host": settings.bind_host, "port": settings.port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway stopping")
    await runner.cleanup()


def _return_big_buffers_to_the_os() -> None:
    """Upload blocks (1 MB) are malloc'd and freed constantly. A fixed mmap threshold
    makes glibc map and unmap them, instead of raising the threshold and keeping
    freed blocks in its heap, so resident memory stays flat during long uploads."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 512 << 10)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def main() -> None:
    _return_big_buffers_to_the_os()
    settings = load(GatewaySettings)
    logs.configure("gateway", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
