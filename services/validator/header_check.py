"""The check before sending: the validator's checks on a file's headers alone.

The client (the page, the Python client) reads each HDU's header blocks from
the user's file and skips its data by the size the header declares; no pixel
travels. Here the headers are put back at their offsets in a file of the
declared size whose data are holes (`HeaderFile`), and the same walk and the
same checks run on it as on an upload, minus what needs pixels (a position on
blank pixels), which the report lists as checked after upload.

It is advice, never trust: the client may lie about its headers, so the upload
is validated in full all the same.
"""

from __future__ import annotations

import bisect
import dataclasses
import io
import typing

from services.shared.errors import Code, ServiceError
from services.shared.fits_header import BLOCK, FitsProblem, Limits, detect_compression
from services.validator.fits_checks import Target, validate_file
from services.validator.report import AfterUpload, Report

_WHOLE_FILE = {
    "gzip": "the file is gzip-compressed: its headers are inside the compressed stream, so it is "
    "checked after upload",
    "compress": "the file is Unix-compressed (.Z): its headers are inside the compressed stream, so it "
    "is checked after upload",
}


@dataclasses.dataclass(frozen=True)
class Segment:
    """One HDU's header as the client read it: where it starts, its blocks, the data it declares."""

    offset: int
    header: bytes
    data_bytes: int


class HeaderFile(io.RawIOBase):
    """A read-only file of `size` bytes holding the segments' headers at their offsets and
    zeros everywhere else (the data the client did not send)."""

    def __init__(self, segments: list[Segment], size: int) -> None:
        self._segments = sorted(segments, key=lambda s: s.offset)
        self._starts = [s.offset for s in self._segments]
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        start = self._pos
        end = self._size if size is None or size < 0 else min(self._size, start + size)
        if end <= start:
            return b""
        out = bytearray(end - start)
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        for seg in self._segments[i:]:
            if seg.offset >= end:
                break
            lo, hi = max(start, seg.offset), min(end, seg.offset + len(seg.header))
            if lo < hi:
                out[lo - start : hi - start] = seg.header[lo - seg.offset : hi - seg.offset]
        self._pos = end
        return bytes(out)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def check_layout(segments: list[Segment], file_size: int, limits: Limits) -> None:
    """Refuses a request whose segments cannot be a file's headers (INVALID_ARGUMENT): these
    are a client's mistakes, not findings about the file."""
    if file_size < 0:
        raise ServiceError(Code.INVALID_ARGUMENT, "file_size must not be negative", field="file_size")
    if not segments and file_size > 0:
        raise ServiceError(Code.INVALID_ARGUMENT, "no header was sent", field="hdus")
    if len(segments) > limits.max_hdus + 1:  # one more: what follows the last HDU
        raise ServiceError(Code.TOO_MANY_HDUS, f"more than {limits.max_hdus} headers were sent", field="hdus")
    total = sum(len(s.header) for s in segments)
    if total > limits.max_total_header_cards * 80 + BLOCK:
        raise ServiceError(Code.TOO_MANY_CARDS, "the headers sent are more than the file may have in all")
    end = 0
    for i, s in enumerate(segments):
        if s.offset < end or s.offset % BLOCK or s.data_bytes < 0 or not s.header:
            raise ServiceError(
                Code.INVALID_ARGUMENT,
                f"header {i}: its offset ({s.offset}) and sizes do not follow the one before "
                "(each header starts on a 2880-byte block after the data of the one before)",
                field="hdus",
            )
        end = s.offset + len(s.header) + -(-s.data_bytes // BLOCK) * BLOCK


def check_headers(
    segments: list[Segment], file_size: int, where: Target, bandpass: str = "", limits: Limits | None = None
) -> Report:
    """The validator's report on the headers alone, as the upload would get it for what
    headers decide; `after_upload` lists what needs the pixels or the whole file."""
    limits = limits or Limits()
    check_layout(segments, file_size, limits)
    try:
        first = segments[0] if segments else None
        compression = detect_compression(first.header[:BLOCK]) if first and first.offset == 0 else "none"
    except FitsProblem:
        compression = "none"  # the walk reports it, with its code
    if compression in _WHOLE_FILE:
        return Report(
            ok=True, compression=compression, after_upload=[AfterUpload([], _WHOLE_FILE[compression])]
        )
    f = typing.cast(typing.IO[bytes], HeaderFile(segments, file_size))
    report = validate_file(f, where, bandpass, limits, pixels=False)
    _agree(report, segments)
    return report


def _agree(report: Report, segments: list[Segment]) -> None:
    """The headers must sit where the validator's walk finds them, and the data sizes the
    client skipped by must be those the validator reads from the same headers; else the
    client read the file wrong and its later headers are not the file's."""
    for hdu, seg in zip(report.hdus, segments, strict=False):
        if hdu.offset != seg.offset or hdu.data_bytes != seg.data_bytes:
            raise ServiceError(
                Code.INVALID_ARGUMENT,
                f"header {hdu.index}: sent at byte {seg.offset} with {seg.data_bytes} bytes of data, "
                f"but the file's headers put it at byte {hdu.offset} with {hdu.data_bytes}",
                field="hdus",
            )
    # Where the walk ended: past the last HDU it read, a header it could not read (a problem) or
    # what follows the last HDU. Only there may one more segment be; past a problem, any.
    rest = segments[len(report.hdus) :]
    if not rest:
        return
    end = 0
    if report.hdus:
        last = report.hdus[-1]
        end = last.offset + len(segments[len(report.hdus) - 1].header) + -(-last.data_bytes // BLOCK) * BLOCK
    if rest[0].offset != end or (len(rest) > 1 and not report.stopped):
        raise ServiceError(
            Code.INVALID_ARGUMENT,
            f"header {len(report.hdus)}: sent at byte {rest[0].offset}, but the file's headers lead to "
            f"byte {end}" + ("" if rest[0].offset != end else f" and end there ({len(rest) - 1} more sent)"),
            field="hdus",
        )
