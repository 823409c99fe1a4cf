"""The server half of the gRPC edge: the server with health, reflection and the
service credential check (started by services/shared/startup.py), and ServiceError
-> status with ErrorInfo. The client half (channels, typed calls, status ->
ServiceError) is `grpc_client`."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services.shared.errors import DOMAIN, Code, ServiceError
from services.shared.grpc_client import TOKEN_HEADER

log = logging.getLogger(__name__)

# Called without the service credential: probes and discovery.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


LIVENESS = "liveness"
"""Health name that stays SERVING while the process runs (liveness probes);
the service names follow their dependencies (readiness probes)."""


def accepted_tokens(setting: str) -> list[bytes]:
    """SERVICE_TOKEN may list several comma-separated tokens during a rotation."""
    return [t.strip().encode() for t in setting.split(",") if t.strip()]


class ServiceTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,name-defined]
    """Refuses every call that does not carry one of the service credentials."""

    def __init__(self, token: str) -> None:
        self._tokens = accepted_tokens(token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        given = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TOKEN_HEADER:
                given = value.encode() if isinstance(value, str) else value
        if given and any(hmac.compare_digest(given, t) for t in self._tokens):
            return await continuation(handler_call_details)

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong service credential")

        return grpc.unary_unary_rpc_method_handler(deny)


def status_of(err: ServiceError) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason=err.code,
        domain=DOMAIN,
        metadata={k: json.dumps(v) for k, v in err.details.items()},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=err.grpc_status.value[0], message=err.message, details=[detail])


def servicer_errors(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Decorates a servicer method: ServiceError -> status with ErrorInfo."""

    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except ServiceError as err:
            await context.abort_with_status(rpc_status.to_status(status_of(err)))  # type: ignore[attr-defined]
        except Exception:
            log.exception("unexpected error in %s", fn.__qualname__)
            internal = ServiceError(Code.INTERNAL, "internal error")
            await context.abort_with_status(rpc_status.to_status(status_of(internal)))  # type: ignore[attr-defined]

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class GrpcServer:
    """A grpc.aio server with health, reflection and the credential check."""

    def __init__(self, host: str, port: int, token: str, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self.server = grpc.aio.server(
            interceptors=[ServiceTokenInterceptor(token)],
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
                # Clients reconnect every few minutes, so new pods behind a
                # headless Service join the round robin; a call in flight
                # gets the whole grace to finish.
                ("grpc.max_connection_age_ms", 5 * 60 * 1000),
                ("grpc.max_connection_age_grace_ms", int(max(grace_s, 60) * 1000)),
            ],
        )
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        self._names: list[str] = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]

    def add(self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str) -> None:
        register(servicer, self.server)
        self._names.append(full_name)

    async def set_serving(self, serving: bool, names: Iterable[str] | None = None) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in list(names or self._names[1:]) + [""]:
            await self.health.set(name, status)

    async def start(self) -> None:
        reflection.enable_server_reflection([*self._names, reflection.SERVICE_NAME], self.server)
        await self.server.start()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.set_serving(True)

    async def stop(self, grace: float | None = None) -> None:
        """Stops taking calls (NOT_SERVING first), lets calls in flight finish."""
        await self.set_serving(False)
        await self.server.stop(self.grace_s if grace is None else grace)


async def follow_health(
    server: GrpcServer, check: Callable[[], Awaitable[bool]], interval_s: float, what: str
) -> None:
    """Keeps readiness in step with a dependency (the store, the database):
    NOT_SERVING while `check` fails or hangs, SERVING once it answers again."""
    serving = True
    while True:
        await asyncio.sleep(interval_s)
        try:
            ok = bool(await asyncio.wait_for(check(), timeout=interval_s))
        except Exception:
            ok = False
        if ok != serving:
            log.warning("%s %s", what, "reachable again: SERVING" if ok else "unreachable: NOT_SERVING")
            await server.set_serving(ok)
            serving = ok
