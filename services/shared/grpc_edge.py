"""gRPC plumbing: the server with health, reflection and the service credential
(started by services/shared/startup.py), error mapping both ways, and
authenticated client channels."""

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

from services.shared.errors import DOMAIN, ServiceError

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-service-token"
# Called without the service credential: probes and discovery.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


LIVENESS = "liveness"
"""Health name that stays SERVING while the process runs (liveness probes);
the service names follow their dependencies (readiness probes)."""


def accepted_tokens(setting: str) -> list[bytes]:
    """SERVICE_TOKEN may list several comma-separated tokens during a rotation."""
    return [t.strip().encode() for t in setting.split(",") if t.strip()]


def outgoing_token(setting: str) -> str:
    """The token a client sends: the first of the list."""
    return setting.split(",")[0].strip()


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
            internal = ServiceError("INTERNAL", "internal error")
            await context.abort_with_status(rpc_status.to_status(status_of(internal)))  # type: ignore[attr-defined]

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def error_from_rpc(exc: grpc.aio.AioRpcError) -> ServiceError:
    """Turns a failed call back into the ServiceError the server raised."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                details = {k: json.loads(v) for k, v in info.metadata.items()}
                try:
                    return ServiceError(info.reason, status.message, **details)
                except ValueError:
                    break
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ServiceError("UNAVAILABLE", f"internal service unavailable: {exc.details()}")
    return ServiceError("INTERNAL", f"internal call failed: {code.name}")


class _TokenAuth(grpc.AuthMetadataPlugin):
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback(((TOKEN_HEADER, self._token),), None)


class _TokenClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc,name-defined]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        metadata = list(client_call_details.metadata or ()) + [(TOKEN_HEADER, self._token)]
        details = client_call_details._replace(metadata=metadata)
        return await continuation(details, request)


def channel(address: str, token: str) -> grpc.aio.Channel:
    """A channel whose every call carries the service credential.

    `dns:///name:port` addresses with several pods behind a headless Service
    are balanced round robin across them.
    """
    options = [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.keepalive_time_ms", 30000),
        # A restarted service is found again within seconds, not after the
        # default back-off of up to two minutes. (min_reconnect_backoff_ms,
        # which is also the connect timeout, keeps its 20 s default.)
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 5000),
    ]
    interceptors: list[Any] = [_TokenClientInterceptor(outgoing_token(token))]
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


async def call(method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
    """Makes one unary call, raising ServiceError on failure."""
    try:
        return await (method(request) if timeout is None else method(request, timeout=timeout))
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from None


class WithDeadline:
    """A stub whose every call carries a deadline, so a hung service fails a
    request (UNAVAILABLE) instead of holding it open for ever."""

    def __init__(self, stub: Any, timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)

        def with_deadline(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._timeout_s)
            return method(request, **kwargs)

        return with_deadline


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
