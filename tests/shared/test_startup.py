"""The one start-up of every service: health and reflection up, a graceful stop
that lets calls in flight finish, and a bad setting refused before anything starts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

from services.shared.grpc_edge import LIVENESS, TOKEN_HEADER
from services.shared.settings import ValidatorSettings
from services.shared.startup import GrpcService, serve

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "startup-token"
SERVING = health_pb2.HealthCheckResponse.SERVING
SLOW = "test.Slow"


def _slow_method(calls: list[str], started: asyncio.Event) -> Any:
    """Registers test.Slow/Sleep, which sleeps as many seconds as the request says."""

    async def sleep(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        calls.append("started")
        started.set()
        await asyncio.sleep(float(request.decode()))
        calls.append("finished")
        return b"done"

    method = grpc.unary_unary_rpc_method_handler(sleep)
    handler = grpc.method_handlers_generic_handler(SLOW, {"Sleep": method})

    def register(servicer: object, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    return register


async def _sleep(ch: grpc.aio.Channel, seconds: str) -> bytes:
    method = ch.unary_unary(f"/{SLOW}/Sleep")  # type: ignore[call-arg]  # bytes in, bytes out
    answer: bytes = await method(seconds.encode(), metadata=((TOKEN_HEADER, TOKEN),), timeout=10)
    return answer


class Started:
    """A service made by `serve`, with what the test wants to see of it."""

    def __init__(self) -> None:
        self.service: GrpcService | None = None
        self.calls: list[str] = []
        self.closed: list[str] = []
        self.rounds_cancelled = asyncio.Event()
        self.ready = asyncio.Event()
        self.call_started = asyncio.Event()

    async def make(self, settings: ValidatorSettings) -> GrpcService:
        service = GrpcService.of(settings)
        service.server.add(_slow_method(self.calls, self.call_started), None, SLOW)

        async def ok() -> bool:
            return True

        async def round_() -> None:
            self.ready.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.rounds_cancelled.set()
                raise

        service.watch(ok, 0.05, "nothing")
        service.background(round_)
        service.on_stop(lambda: self.closed.append("sync"))

        async def close() -> None:
            self.closed.append("async")

        service.on_stop(close)
        self.service = service
        return service

    async def serve(self, grace_s: float) -> tuple[asyncio.Task[None], asyncio.Event, str]:
        """Runs `serve` as a service's main does; setting the event is what SIGTERM does."""
        settings = ValidatorSettings(port=0, service_token=SecretStr(TOKEN), shutdown_grace_s=grace_s)
        stop = asyncio.Event()
        serving = asyncio.create_task(serve("validator", settings, self.make, stop))
        await asyncio.wait_for(self.ready.wait(), 10)
        assert self.service is not None
        return serving, stop, f"127.0.0.1:{self.service.port}"


async def test_serve_starts_health_and_reflection_and_stops_gracefully() -> None:
    started = Started()
    serving, stop, address = await started.serve(grace_s=5.0)
    async with grpc.aio.insecure_channel(address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in (SLOW, "", LIVENESS):
            assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = reflection.ServerReflectionInfo(iter([ask]))
        listed = {s.name async for a in answers for s in a.list_services_response.service}
        assert {SLOW, "grpc.health.v1.Health"} <= listed

        in_flight = asyncio.create_task(_sleep(ch, "0.5"))
        await asyncio.wait_for(started.call_started.wait(), 10)
        stop.set()  # what SIGTERM does
        # New calls are refused at once; the call in flight still gets its answer.
        await asyncio.sleep(0.1)
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(service=SLOW), timeout=2)
        assert not in_flight.done()
        assert await in_flight == b"done"
    await asyncio.wait_for(serving, 10)
    assert started.calls == ["started", "finished"]
    assert started.rounds_cancelled.is_set()
    assert started.closed == ["sync", "async"]


async def test_a_call_longer_than_the_grace_is_cut() -> None:
    started = Started()
    serving, stop, address = await started.serve(grace_s=0.2)
    async with grpc.aio.insecure_channel(address) as ch:
        in_flight = asyncio.create_task(_sleep(ch, "30"))
        await asyncio.wait_for(started.call_started.wait(), 10)
        stop.set()
        with pytest.raises(grpc.aio.AioRpcError):
            await in_flight
    await asyncio.wait_for(serving, 10)
    assert started.closed == ["sync", "async"]


def _messages(log: str) -> list[str]:
    """The messages of the JSON log lines (gRPC's own lines are not JSON)."""
    return [json.loads(line)["msg"] for line in log.splitlines() if line.startswith("{")]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "LOG_FORMAT": "json", **extra}


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        (["services.validator"], "VALIDATOR_PORT", "70000"),
        (["services.processor"], "PROCESSOR_MAX_JOBS", "0"),
        (["services.processor", "serve"], "SWARP_TIMEOUT_S", "-1"),
        (["services.catalog"], "CULL_LOW_WATER", "0.95"),
        (["services.catalog", "migrate"], "DATABASE_URL", "mysql://bgimages:hunter2@db/bgimages"),
        (["services.gateway"], "CATALOG_ADDR", "catalog"),
        (["services.validator", "check", "x.fits", "--target", "1", "2"], "MAX_HDUS", "0"),
    ],
)
def test_a_bad_setting_stops_the_service_at_start_naming_it(
    command: list[str], variable: str, value: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env=_env(**{variable: value}, STORE_DIR=str(tmp_path / "store"), PG_DATA_DIR=str(tmp_path / "pg")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"{command[0].removeprefix('services.')}: cannot start: "), line
    assert variable in line
    assert "hunter2" not in line


@pytest.mark.parametrize("name", ["validator", "gateway"])
def test_sigterm_stops_the_process_cleanly(name: str, tmp_path: Path) -> None:
    port = {"validator": "VALIDATOR_PORT", "gateway": "GATEWAY_PORT"}[name]
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        cwd=ROOT,
        env=_env(**{port: "0"}, STORE_DIR=str(tmp_path / "store"), DEV_MODE="1", SHUTDOWN_GRACE_S="1"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if _messages(line) == [f"{name} listening"]:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, rest
    finally:
        proc.kill()
        proc.wait()
    messages = _messages(rest)
    assert messages[0] == f"{name} stopping" and messages[-1] == f"{name} stopped", messages
