"""The gateway's services called directly, with stand-ins for the gRPC stubs and a
local store: no network, no processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf.message import Message

from bgimages.catalog.v1 import catalog_pb2
from bgimages.common.v1 import common_pb2
from bgimages.validator.v1 import validator_pb2
from services.gateway.arguments import ob_context
from services.gateway.displays import Displays
from services.gateway.health import Health
from services.gateway.hips import Hips
from services.gateway.hips_tokens import HipsTokens
from services.gateway.images import Images
from services.gateway.metrics import Metrics
from services.gateway.uploads import UploadFile, Uploads, UploadTarget, ValidationFailed
from services.shared.errors import Code, ServiceError
from services.shared.store import LocalStore

Reply = Message | Callable[[Any], Message]


class StandIn:
    """A stub whose methods answer as told and record their requests."""

    def __init__(self, **replies: Reply) -> None:
        self.requests: dict[str, list[Any]] = {}
        for name, reply in replies.items():
            setattr(self, name, self._method(name, reply))

    def _method(self, name: str, reply: Reply) -> Callable[..., Awaitable[Message]]:
        async def method(request: Any, timeout: float | None = None) -> Message:
            self.requests.setdefault(name, []).append(request)
            return reply(request) if callable(reply) else reply

        return method


def stub(**replies: Reply) -> Any:
    return cast(Any, StandIn(**replies))


async def chunks(*blocks: bytes) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block


async def keys(store: LocalStore) -> list[str]:
    return [info.key async for info in store.list("")]


OB = ob_context(7, "p2:60.A-1(A)", "150", "2")
CALLER = catalog_pb2.Caller(user_id="p2:1")


def uploads(store: LocalStore, catalog: Any, validator: Any, processor: Any = None) -> Uploads:
    return Uploads(
        store=store,
        validator=validator,
        processor=processor or stub(),
        catalog=catalog,
        metrics=Metrics(),
        max_uploads=2,
        max_uploads_per_user=1,
        retry_after_s=5,
    )


async def test_a_refused_file_leaves_nothing_and_ends_its_lease(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    catalog = stub(
        BeginUpload=catalog_pb2.BeginUploadResponse(
            action=catalog_pb2.BeginUploadResponse.PROCESS, lease_id="lease-1", lease_ttl_seconds=120
        ),
        AbortUpload=catalog_pb2.AbortUploadResponse(),
    )
    refusal = common_pb2.ErrorDetail(code=common_pb2.TARGET_OUTSIDE_FIELD, message="the target is outside")
    validator = stub(
        Validate=validator_pb2.ValidateResponse(report=validator_pb2.ValidationReport(errors=[refusal]))
    )
    service = uploads(store, catalog, validator)
    with pytest.raises(ValidationFailed) as err:
        await service.upload(CALLER, UploadFile(chunks(b"SIMPLE", b"  = T")), UploadTarget(OB, " R "))
    assert err.value.code == "TARGET_OUTSIDE_FIELD"
    assert validator.requests["Validate"][0].bandpass == "R"
    assert [r.lease_id for r in catalog.requests["AbortUpload"]] == ["lease-1"]
    assert await keys(store) == []


async def test_a_target_learnt_after_the_file_is_refused_before_the_catalog_is_asked(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    catalog = stub()

    async def target() -> UploadTarget:
        raise ServiceError(Code.INVALID_ARGUMENT, "run_id is required")

    with pytest.raises(ServiceError, match="run_id"):
        await uploads(store, catalog, stub()).upload(CALLER, UploadFile(chunks(b"x" * 10)), target)
    assert catalog.requests == {} and await keys(store) == []


async def test_an_empty_file_is_not_fits(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(ServiceError) as err:
        await uploads(store, stub(), stub()).stage(chunks())
    assert err.value.code == "NOT_FITS" and await keys(store) == []


async def test_readiness_names_each_dependency(tmp_path: Path) -> None:
    async def up() -> bool:
        return True

    async def down() -> bool:
        return False

    health = Health(
        services={"validator": up, "processor": down, "catalog": up},
        store=LocalStore(tmp_path),
        catalog=stub(),
        metrics=Metrics(),
    )
    assert await health.readiness() == {"validator": True, "processor": False, "catalog": True, "store": True}


async def test_displays_are_sent_in_one_batch_and_kept_when_the_catalog_fails() -> None:
    sent: list[list[str]] = []

    def record(request: catalog_pb2.RecordDisplaysRequest) -> Message:
        sent.append(list(request.fits_hashes))
        if len(sent) == 1:
            raise ServiceError(Code.UNAVAILABLE, "catalog down")
        return catalog_pb2.RecordDisplaysResponse()

    displays = Displays(catalog=stub(RecordDisplays=record), flush_s=60)
    for fits_hash in ("b" * 64, "a" * 64, "b" * 64):
        displays.seen(fits_hash)
    with pytest.raises(ServiceError):
        await displays.flush()
    await displays.flush()
    assert sent == [["a" * 64, "b" * 64]] * 2
    await displays.flush()  # nothing left: no call
    assert len(sent) == 2


async def test_a_hips_token_opens_only_the_hips_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put_bytes("content/h/g1/hips/properties", b"hips_order = 3\n")
    image = catalog_pb2.Image(fits_hash="c" * 64, hips_prefix="content/h/g1/hips/")
    catalog = stub(AuthorizeDisplay=image)
    displays = Displays(catalog=catalog, flush_s=60)
    hips = Hips(
        images=Images(catalog=catalog, store=store),
        tokens=HipsTokens(b"k" * 32, 600),
        store=store,
        displays=displays,
    )
    access = await hips.access(CALLER, "c" * 64, 7)
    assert catalog.requests["AuthorizeDisplay"][0].ob_id == 7
    served = await hips.file("c" * 64, access.token, "properties")
    assert served.content_type.startswith("text/plain") and served.size == 15
    for path in ("../secret", "Norder3/Dir0/Npix1.exe", "index.html"):
        with pytest.raises(ServiceError) as err:
            await hips.file("c" * 64, access.token, path)
        assert err.value.code == "NOT_FOUND"
    with pytest.raises(ServiceError) as err:
        await hips.file("d" * 64, access.token, "properties")
    assert err.value.code == "FORBIDDEN"
