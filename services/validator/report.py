"""The validation report: plain dataclasses, rendered as the protobuf message or as JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

from bgimages.common.v1 import common_pb2
from bgimages.validator.v1 import validator_pb2
from services.shared.errors import Code


@dataclasses.dataclass
class Problem:
    """One failed check: a stable code (common.v1.ErrorCode name), the HDU, a message for people."""

    code: Code
    message: str
    hdu: int | None = None


@dataclasses.dataclass
class AfterUpload:
    """A check the headers alone cannot answer: made once the whole file is uploaded."""

    codes: list[Code]
    message: str
    hdu: int | None = None


@dataclasses.dataclass
class HduResult:
    index: int
    extname: str = ""
    shape: list[int] = dataclasses.field(default_factory=list)  # NAXIS1 first
    displayable: bool = False
    skip_reason: str | None = None
    pixel_scale_arcsec: float = 0.0
    footprint: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    contains_target: bool | None = None
    contains_boa: bool | None = None
    tile_compressed: bool = False
    kind: str = ""  # "image", "table", "empty", ...
    bitpix: int = 0
    offset: int = 0  # where the header starts in the file
    data_bytes: int = 0  # the data its header declares, without padding


@dataclasses.dataclass
class Report:
    ok: bool = False
    filter: str = ""
    filter_source: str = ""
    errors: list[Problem] = dataclasses.field(default_factory=list)
    # What departs from the FITS standard but is accepted (free-format values of mandatory keywords).
    warnings: list[Problem] = dataclasses.field(default_factory=list)
    hdus: list[HduResult] = dataclasses.field(default_factory=list)
    compression: str = "none"  # "none", "gzip", "compress"
    object_name: str = ""
    # Whether the header walk stopped at a problem of the file's structure (later HDUs unread).
    stopped: bool = False
    # The check of the headers alone (CheckHeaders): what is left for the full check.
    after_upload: list[AfterUpload] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `python -m services.validator check` prints."""
        return {
            "ok": self.ok,
            "filter": self.filter or None,
            "filter_source": self.filter_source or None,
            "errors": [{"code": e.code, "hdu": e.hdu, "message": e.message} for e in self.errors],
            "warnings": [{"code": w.code, "hdu": w.hdu, "message": w.message} for w in self.warnings],
            "hdus": [
                {
                    "index": h.index,
                    "extname": h.extname or None,
                    "shape": h.shape,
                    "displayable": h.displayable,
                    "skip_reason": h.skip_reason,
                    "pixel_scale_arcsec": round(h.pixel_scale_arcsec, 6) if h.displayable else None,
                    "footprint": [[round(ra, 7), round(dec, 7)] for ra, dec in h.footprint],
                    "contains_target": h.contains_target,
                    "contains_boa": h.contains_boa,
                    "tile_compressed": h.tile_compressed,
                    "kind": h.kind,
                    "bitpix": h.bitpix,
                }
                for h in self.hdus
            ],
            "compression": self.compression,
            "object_name": self.object_name or None,
            "after_upload": [
                {"codes": a.codes, "hdu": a.hdu, "message": a.message} for a in self.after_upload
            ],
        }

    def to_proto(self) -> validator_pb2.ValidationReport:
        """The ValidationReport message of the gRPC contract."""
        out = validator_pb2.ValidationReport(
            ok=self.ok,
            filter=self.filter,
            filter_source=self.filter_source,
            compression=_COMPRESSION[self.compression],
            object_name=self.object_name,
        )
        for e in self.errors:
            detail = out.errors.add(code=common_pb2.ErrorCode.Value(e.code), message=e.message)
            if e.hdu is not None:
                detail.hdu = e.hdu
        for w in self.warnings:
            detail = out.warnings.add(code=common_pb2.ErrorCode.Value(w.code), message=w.message)
            if w.hdu is not None:
                detail.hdu = w.hdu
        for a in self.after_upload:
            later = out.after_upload.add(
                codes=[common_pb2.ErrorCode.Value(c) for c in a.codes], message=a.message
            )
            if a.hdu is not None:
                later.hdu = a.hdu
        for h in self.hdus:
            hdu = out.hdus.add(
                index=h.index,
                extname=h.extname,
                shape=h.shape,
                displayable=h.displayable,
                skip_reason=h.skip_reason or "",
                pixel_scale_arcsec=h.pixel_scale_arcsec if h.displayable else 0.0,
                tile_compressed=h.tile_compressed,
            )
            for ra, dec in h.footprint:
                hdu.footprint.add(ra_deg=ra, dec_deg=dec)
            if h.contains_target is not None:
                hdu.contains_target = h.contains_target
            if h.contains_boa is not None:
                hdu.contains_boa = h.contains_boa
        return out


_COMPRESSION = {
    "none": validator_pb2.COMPRESSION_NONE,
    "gzip": validator_pb2.COMPRESSION_GZIP,
    "compress": validator_pb2.COMPRESSION_UNIX_COMPRESS,
}
