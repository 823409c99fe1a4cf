"""What requests say, read and checked: selections in p2api's vocabulary, fits_hashes,
OB contexts and the numbers in them. Both faces and the services use these."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

from bgimages.catalog.v1 import catalog_pb2
from bgimages.common.v1 import common_pb2
from services.shared.errors import Code, ServiceError

Caller = catalog_pb2.Caller
ObContext = common_pb2.ObContext

_HASH = re.compile(r"^[0-9a-f]{64}$")
# Selections in p2api's vocabulary: "default", "gaia", "survey|NAME",
# "eso_im|DPID", "user_bkg_image|<fits_hash>".
_KIND_OF_TAG = {
    "default": catalog_pb2.SELECTION_KIND_DEFAULT,
    "gaia": catalog_pb2.SELECTION_KIND_GAIA,
    "survey": catalog_pb2.SELECTION_KIND_SURVEY,
    "eso_im": catalog_pb2.SELECTION_KIND_ESO_IMAGE,
    "user_bkg_image": catalog_pb2.SELECTION_KIND_USER_IMAGE,
}
_TAG_OF_KIND = {kind: tag for tag, kind in _KIND_OF_TAG.items()}
_SELECTION_VALUE = re.compile(r"^[A-Za-z0-9_.:+/()\[\] -]{1,200}$")


def parse_selection(text: str) -> tuple[catalog_pb2.SelectionKind.ValueType, str]:
    """Splits a selection string into (kind, value); INVALID_ARGUMENT if malformed."""
    tag, sep, value = text.partition("|")
    kind = _KIND_OF_TAG.get(tag)
    if kind is None:
        raise ServiceError(
            Code.INVALID_ARGUMENT,
            f"unknown selection {text[:80]!r}: expected default, gaia, survey|NAME, eso_im|DPID "
            "or user_bkg_image|<fits_hash>",
        )
    if kind in (catalog_pb2.SELECTION_KIND_DEFAULT, catalog_pb2.SELECTION_KIND_GAIA):
        if sep:
            raise ServiceError(Code.INVALID_ARGUMENT, f"selection {tag!r} takes no value")
        return kind, ""
    if not value:
        raise ServiceError(Code.INVALID_ARGUMENT, f"selection {tag!r} needs a value after '|'")
    if kind == catalog_pb2.SELECTION_KIND_USER_IMAGE:
        return kind, check_hash(value)
    if not _SELECTION_VALUE.match(value):
        raise ServiceError(Code.INVALID_ARGUMENT, f"malformed {tag} value")
    return kind, value


def format_selection(selection: catalog_pb2.Selection) -> str:
    """The p2api string of a selection ("default" when unset)."""
    tag = _TAG_OF_KIND.get(selection.kind, "default")
    if selection.kind in (catalog_pb2.SELECTION_KIND_DEFAULT, catalog_pb2.SELECTION_KIND_GAIA):
        return tag
    if selection.kind == catalog_pb2.SELECTION_KIND_UNSPECIFIED:
        return "default"
    return f"{tag}|{selection.value}"


def check_hash(fits_hash: str) -> str:
    """A fits_hash is 64 lowercase hex digits (the SHA-256 of the uploaded bytes)."""
    if not _HASH.match(fits_hash):
        raise ServiceError(Code.INVALID_ARGUMENT, "fits_hash must be 64 lowercase hexadecimal digits")
    return fits_hash


# Numbers as requests may write them: ASCII digits only. float() and int() also read
# other scripts' digits ("١٥٠" is 150), underscores ("1_50"), spaces, "nan" and "inf".
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_INTEGER = re.compile(r"[0-9]{1,19}")


def decimal_number(value: object, name: str) -> float:
    """A finite number from a JSON number or ASCII decimal text; INVALID_ARGUMENT otherwise."""
    number: float | None = None
    written = isinstance(value, str) and _DECIMAL.fullmatch(value) is not None
    if written or (isinstance(value, int | float) and not isinstance(value, bool)):
        number = float(value)  # type: ignore[arg-type]
    if number is None or not math.isfinite(number):
        raise ServiceError(Code.INVALID_ARGUMENT, f"{name} must be a decimal number in ASCII digits")
    return number


def decimal_integer(value: object, name: str) -> int:
    """A non-negative integer from a JSON integer or ASCII digits; INVALID_ARGUMENT otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise ServiceError(Code.INVALID_ARGUMENT, f"{name} must be an integer in ASCII digits")


def ob_context(
    ob_id: int | str,
    run_id: str,
    target_ra: float | str | None,
    target_dec: float | str | None,
    boa_ra: float | str | None = None,
    boa_dec: float | str | None = None,
    instrument: str | None = None,
) -> ObContext:
    """Builds and checks an OB context from loosely typed request values."""
    ob = decimal_integer(ob_id, "ob_id")
    if ob <= 0 or ob >= 1 << 62:
        raise ServiceError(Code.INVALID_ARGUMENT, "ob_id must be a positive integer")
    if not run_id or len(run_id) > 200 or not run_id.isprintable():
        raise ServiceError(Code.INVALID_ARGUMENT, "run_id is required")
    context = ObContext(
        ob_id=ob,
        run_id=run_id,
        target=sky_position("target", target_ra, target_dec),
        instrument=instrument_name(instrument),
    )
    if (boa_ra is None or boa_ra == "") != (boa_dec is None or boa_dec == ""):
        raise ServiceError(Code.INVALID_ARGUMENT, "boa_ra and boa_dec go together")
    if boa_ra is not None and boa_ra != "":
        context.boa_star.CopyFrom(sky_position("boa", boa_ra, boa_dec))
    return context


def sky_position(name: str, ra: float | str | None, dec: float | str | None) -> common_pb2.SkyPosition:
    """A checked ICRS position in degrees."""
    if ra is None or dec is None or ra == "" or dec == "":
        raise ServiceError(Code.INVALID_ARGUMENT, f"{name}_ra and {name}_dec are required (degrees)")
    ra_deg, dec_deg = decimal_number(ra, f"{name}_ra"), decimal_number(dec, f"{name}_dec")
    if not (0.0 <= ra_deg < 360.0):
        raise ServiceError(Code.INVALID_ARGUMENT, f"{name}_ra must be in [0, 360) degrees")
    if not (-90.0 <= dec_deg <= 90.0):
        raise ServiceError(Code.INVALID_ARGUMENT, f"{name}_dec must be in [-90, 90] degrees")
    return common_pb2.SkyPosition(ra_deg=ra_deg, dec_deg=dec_deg)


_INSTRUMENT = re.compile(r"^[A-Za-z0-9_+-]{1,40}$")


def instrument_name(value: object) -> str:
    """An instrument as p2 names it ("FORS2", "HAWKI"); empty when not given."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not _INSTRUMENT.match(value):
        raise ServiceError(Code.INVALID_ARGUMENT, "instrument must be a name such as FORS2 or HAWKI")
    return value.upper()


def observation_date(value: object) -> dt.date | None:
    """The observation date (YYYY-MM-DD, 1900-2200) the Gaia image's positions are carried to;
    None when not given (today)."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else ""
    try:
        when = dt.date.fromisoformat(text) if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text) else None
    except ValueError:
        when = None
    if when is None or not 1900 <= when.year <= 2200:
        raise ServiceError(Code.INVALID_ARGUMENT, "obs_date must be a date YYYY-MM-DD from 1900 to 2200")
    return when


def header_layout(text: str, headers: bytes) -> list[tuple[int, bytes, int]]:
    """The check before sending's `layout` (a JSON list of {offset, header_bytes, data_bytes},
    one per HDU in file order) applied to the `headers` part: (offset, header, data_bytes) each.
    INVALID_ARGUMENT when malformed or when the sizes do not add up to the part. The layout
    field's size limit bounds the count; the validator holds it to MAX_HDUS."""
    try:
        entries: Any = json.loads(text)
    except ValueError:
        entries = None
    if not isinstance(entries, list) or not entries:
        raise ServiceError(
            Code.INVALID_ARGUMENT,
            "layout must be a JSON list of {offset, header_bytes, data_bytes}, one per HDU",
            field="layout",
        )
    out = []
    at = 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ServiceError(Code.INVALID_ARGUMENT, f"layout[{i}] is not an object", field="layout")
        offset, size, data = (
            decimal_integer(entry.get(k), f"layout[{i}].{k}")
            for k in ("offset", "header_bytes", "data_bytes")
        )
        out.append((offset, headers[at : at + size], data))
        at += size
    if at != len(headers):
        raise ServiceError(
            Code.INVALID_ARGUMENT,
            f"the layout's header_bytes add up to {at}, but the headers part has {len(headers)} bytes",
            field="layout",
        )
    return out
