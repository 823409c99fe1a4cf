"""Tombstones in the selector: an owner is told of a removed image only for OBs it would
have fitted, and no longer once the same bytes are uploaded again."""

from __future__ import annotations

import itertools

from bgimages.catalog.v1 import catalog_pb2
from tests.catalog.conftest import Harness, caller, next_ob, ob, square

RA, DEC = 210.0, -40.0
_n = itertools.count(1)


async def _tombstones(
    catalog: Harness, user: str, run: str, target: tuple[float, float], boa: tuple[float, float] | None = None
) -> list[str]:
    request = catalog_pb2.ListImagesRequest(caller=caller(user), ob=ob(next_ob(), run, *target, boa=boa))
    listing = await catalog.call("ListImages", request)
    return [t.fits_hash for t in listing.tombstones]


async def _delete(catalog: Harness, owner: str, fits_hash: str) -> None:
    request = catalog_pb2.DeleteImageRequest(caller=caller(owner), fits_hash=fits_hash)
    await catalog.call("DeleteImage", request)


async def test_a_tombstone_shows_only_where_the_image_would_fit(catalog: Harness) -> None:
    n = next(_n)
    owner, run = f"p2:tomb-owner-{n}", f"p2:tomb-{n}"
    await catalog.set_run(run, owner)
    # Two chips: the tombstone keeps both footprints.
    chips = [square(RA - 0.15, DEC, 0.1, hdu=1), square(RA + 0.15, DEC, 0.1, hdu=2)]
    image = await catalog.upload(owner, next_ob(), run, f"tomb-{n}", chips, target=(RA - 0.15, DEC))
    other = await catalog.upload(owner, next_ob(), run, f"elsewhere-{n}", [square(RA + 20, DEC, 0.1)])
    for removed in (image, other):
        await _delete(catalog, owner, removed.fits_hash)

    assert await _tombstones(catalog, owner, run, (RA - 0.15, DEC)) == [image.fits_hash]
    assert await _tombstones(catalog, owner, run, (RA + 0.15, DEC)) == [image.fits_hash]  # the other chip
    assert await _tombstones(catalog, owner, run, (RA + 20, DEC)) == [other.fits_hash]
    assert await _tombstones(catalog, owner, run, (RA, DEC + 5)) == []  # neither would fit
    assert await _tombstones(catalog, owner, run, (RA, DEC)) == []  # the gap between the chips
    # With a BOA star, both must fall on the image.
    assert await _tombstones(catalog, owner, run, (RA - 0.15, DEC), boa=(RA + 0.15, DEC)) == [image.fits_hash]
    assert await _tombstones(catalog, owner, run, (RA - 0.15, DEC), boa=(RA + 20, DEC)) == []


async def test_a_tombstone_goes_once_the_bytes_are_back(catalog: Harness) -> None:
    n = next(_n)
    owner, run = f"p2:back-owner-{n}", f"p2:back-{n}"
    await catalog.set_run(run, owner)
    label, fp = f"back-{n}", [square(RA, DEC, 0.1)]
    image = await catalog.upload(owner, next_ob(), run, label, fp)
    await _delete(catalog, owner, image.fits_hash)
    # Deleted twice over (uploaded, deleted, uploaded, deleted): one tombstone shown.
    again = await catalog.upload(owner, next_ob(), run, label, fp)
    await _delete(catalog, owner, again.fits_hash)
    assert await _tombstones(catalog, owner, run, (RA, DEC)) == [image.fits_hash]

    back = await catalog.upload(owner, next_ob(), run, label, fp)
    listing = await catalog.call(
        "ListImages", catalog_pb2.ListImagesRequest(caller=caller(owner), ob=ob(next_ob(), run, RA, DEC))
    )
    assert [i.fits_hash for i in listing.own] == [back.fits_hash] and list(listing.tombstones) == []
