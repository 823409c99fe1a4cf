"""The client half of the gRPC edge: channels that carry the service credential,
each call's deadline and the retry policy of the service they reach (`CallPolicy`),
and typed calls that turn a failed call back into the ServiceError the server raised.

Retries are in the channel's service config. Deadlines are not: grpcio applies a
service-config `timeout` one to two seconds early (grpc/grpc#34547, #40633), so
the channel's interceptor gives each call its policy's deadline instead.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.shared.errors import Code, ServiceError

TOKEN_HEADER = "x-service-token"

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

# A retried call waits 0.25 s, then 0.5 s: a service restarted by its supervisor is
# found again, and the call's own deadline (in the same config) still bounds the whole.
RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.25s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": [Code.UNAVAILABLE],
}
# Retries stop while more than a tenth of the calls fail (no retry storm on an outage).
RETRY_THROTTLING = {"maxTokens": 10, "tokenRatio": 0.1}


def outgoing_token(setting: str) -> str:
    """The token a client sends: the first of the comma-separated list."""
    return setting.split(",")[0].strip()


@dataclasses.dataclass(frozen=True)
class CallPolicy:
    """How a client calls one service: every call's deadline, the methods with a
    deadline of their own, and the idempotent methods retried on UNAVAILABLE.
    Never list a method here as retried whose repetition would do something twice.
    A deadline given with a call is kept when it is the shorter."""

    service: str  # full name, e.g. bgimages.catalog.v1.CatalogService
    timeout_s: float
    retried: frozenset[str] = frozenset()
    timeouts: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def deadline(self, path: str, given: float | None) -> float | None:
        """The timeout of a call to `path` ("/package.Service/Method"): the policy's,
        or the one given when shorter. Calls to other services keep theirs."""
        service, _, method = path.strip("/").partition("/")
        if service != self.service:
            return given
        timeout = self.timeouts.get(method, self.timeout_s)
        return timeout if given is None else min(given, timeout)

    def service_config(self) -> str:
        """The channel's `grpc.service_config` JSON (gRPC's service config format): the retries."""
        configs = [
            {"name": [{"service": self.service, "method": method}], "retryPolicy": RETRY_POLICY}
            for method in sorted(self.retried)
        ]
        return json.dumps({"methodConfig": configs, "retryThrottling": RETRY_THROTTLING})


class _ChannelCalls(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds the service credential (insecure channels carry no call credentials) and
    the policy's deadline to every call."""

    def __init__(self, token: str, policy: CallPolicy | None) -> None:
        self._token = token
        self._policy = policy

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Message], grpc.aio.UnaryUnaryCall[Message, Message]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Message,
    ) -> Message:
        # (At run time `continuation` is a coroutine giving the call, which is what
        # an interceptor returns; grpc-stubs says the awaited call's reply.)
        timeout = client_call_details.timeout
        if self._policy is not None:
            method = client_call_details.method
            timeout = self._policy.deadline(method.decode() if isinstance(method, bytes) else method, timeout)
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            timeout,
            grpc.aio.Metadata(*(client_call_details.metadata or ()), (TOKEN_HEADER, self._token)),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def channel(address: str, token: str, policy: CallPolicy | None = None) -> grpc.aio.Channel:
    """A channel whose every call carries the service credential and, with a
    policy, its deadline and retries.

    `dns:///name:port` addresses with several pods behind a headless Service
    are balanced round robin across them.
    """
    options: list[tuple[str, str | int]] = [
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
    if policy is not None:
        options.append(("grpc.service_config", policy.service_config()))
    # grpc-stubs types interceptors as a placeholder that takes no class: hence the ignore.
    interceptors = [_ChannelCalls(outgoing_token(token), policy)]
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)  # type: ignore[arg-type]


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
        return ServiceError(Code.UNAVAILABLE, f"internal service unavailable: {exc.details()}")
    return ServiceError(Code.INTERNAL, f"internal call failed: {code.name}")


async def call(
    method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req, timeout: float | None = None
) -> Resp:
    """Makes one unary call, raising ServiceError on failure. The deadline is the
    channel's (its CallPolicy), or `timeout` when that is the shorter."""
    try:
        return await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from None
