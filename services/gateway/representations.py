"""JSON shapes of the native API, built from catalog messages.

Store keys and internal ids stay inside; clients get links instead.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from bgimages.catalog.v1 import catalog_pb2
from services.gateway.arguments import format_selection
from services.gateway.hips import HipsAccess
from services.gateway.uploads import UploadOutcome

API = "/api/v1"


def _time(ts: timestamp_pb2.Timestamp) -> str | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")


def image_links(fits_hash: str) -> dict[str, str]:
    base = f"{API}/images/{fits_hash}"
    return {"self": base, "preview": f"{base}/preview.png", "fits": f"{base}/fits", "hips": f"{base}/hips"}


def image_json(image: catalog_pb2.Image) -> dict[str, Any]:
    return {
        "fits_hash": image.fits_hash,
        "selection": f"user_bkg_image|{image.fits_hash}",
        "file_name": image.file_name,
        "object_name": image.object_name,
        "filter": image.filter,
        "owner_id": image.owner_id,
        "owned_by_caller": image.owned_by_caller,
        "file_bytes": image.file_bytes,
        "stored_bytes": image.stored_bytes,
        "hips_order": image.hips_order,
        "pixel_cut": [image.cut_low, image.cut_high],
        "footprints": [
            {
                "hdu": f.hdu,
                "corners": [[c.ra_deg, c.dec_deg] for c in f.corners],
                "pixel_scale_arcsec": f.pixel_scale_arcsec,
            }
            for f in image.footprints
        ],
        "run_ids": list(image.run_ids),
        "created_at": _time(image.created_at),
        "last_used_at": _time(image.last_used_at),
        "links": image_links(image.fits_hash),
    }


def selection_json(selection: catalog_pb2.Selection) -> dict[str, Any]:
    kind = catalog_pb2.SelectionKind.Name(selection.kind).removeprefix("SELECTION_KIND_").lower()
    if kind == "unspecified":
        kind = "default"
    return {
        "selection": format_selection(selection),
        "kind": kind,
        "value": selection.value,
        "image": image_json(selection.image) if selection.HasField("image") else None,
    }


def tombstone_json(tombstone: catalog_pb2.Tombstone) -> dict[str, Any]:
    reason = catalog_pb2.RemovalReason.Name(tombstone.reason).removeprefix("REMOVAL_REASON_").lower()
    return {
        "fits_hash": tombstone.fits_hash,
        "file_name": tombstone.file_name,
        "removed_at": _time(tombstone.removed_at),
        "reason": reason,
    }


def listing_json(
    ob_id: int, run_id: str, listing: catalog_pb2.ListImagesResponse, survey_name: str, survey_url: str
) -> dict[str, Any]:
    return {
        "ob_id": ob_id,
        "run_id": run_id,
        "default_survey": {"selection": "default", "name": survey_name, "hips_url": survey_url},
        "own": [image_json(i) for i in listing.own],
        "shared": [image_json(i) for i in listing.shared],
        "selected": selection_json(listing.selected),
        "tombstones": [tombstone_json(t) for t in listing.tombstones],
    }


def upload_json(outcome: UploadOutcome) -> dict[str, Any]:
    body = image_json(outcome.image)
    body["reused_content"] = outcome.reused_content
    return body


def hips_json(access: HipsAccess, base_url: str) -> dict[str, Any]:
    return {
        "fits_hash": access.fits_hash,
        "hips_url": f"{base_url}{API}/images/{access.fits_hash}/hips/{access.token}",
        "expires_at": access.expires_at,
    }


def run_json(run: catalog_pb2.Run) -> dict[str, Any]:
    return {"run_id": run.run_id, "owner_id": run.owner_id, "delegate_ids": list(run.delegate_ids)}
