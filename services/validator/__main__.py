"""`python -m services.validator [serve]` runs the gRPC service;
`python -m services.validator check FILE --target RA DEC` checks a file.

`check` prints the report as JSON and exits 0 when the file is accepted,
1 when it is not (broken files included), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from services.shared import startup
from services.shared.errors import ServiceError
from services.shared.fits_header import Limits
from services.shared.settings import ValidatorSettings
from services.shared.startup import GrpcService
from services.validator.fits_checks import Target, check_position, validate_path


async def make(cfg: ValidatorSettings) -> GrpcService:
    """The validator's gRPC service: the store, the servicer, readiness following the store."""
    from services.shared.store import open_store
    from services.validator.server import add_to, limits_of

    store = open_store(cfg)
    service = GrpcService.of(cfg)
    add_to(service.server, store, limits_of(cfg), cfg.max_concurrent, cfg.max_queued, cfg.retry_after_s)
    service.watch(store.ping, cfg.health_interval_s, "object store")
    return service


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.validator", description=__doc__)
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gRPC service (the default)")
    c = sub.add_parser("check", help="check a FITS file as an upload for an OB would be; print JSON")
    c.add_argument("file", help="FITS file (.fits, .fits.gz, .fits.Z, fpack)")
    c.add_argument("--target", nargs=2, type=float, metavar=("RA", "DEC"), required=True, help="degrees")
    c.add_argument("--boa", nargs=2, type=float, metavar=("RA", "DEC"), help="BOA reference star, degrees")
    c.add_argument("--bandpass", default="", help="filter to use when the file names none")
    c.add_argument("--max-decompressed-bytes", type=int, default=None, help="cap on a compressed file")
    c.add_argument("--indent", type=int, default=2, help="JSON indentation (0: one line)")
    return p


def check(args: argparse.Namespace) -> int:
    try:
        target = check_position("--target", *args.target)
        boa = check_position("--boa", *args.boa) if args.boa else None
    except ServiceError as err:
        print(f"usage error: {err.message}", file=sys.stderr)
        return 2
    cfg = startup.load_or_exit("validator", ValidatorSettings)
    limits = Limits(
        max_hdus=cfg.max_hdus,
        max_header_cards=cfg.max_header_cards,
        max_total_header_cards=cfg.max_total_header_cards,
        max_decompressed_bytes=args.max_decompressed_bytes or cfg.max_decompressed_bytes,
    )
    try:
        report = validate_path(args.file, Target(target, boa), args.bandpass, limits)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"usage error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=args.indent or None))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return check(args)
    return startup.run("validator", ValidatorSettings, make)


if __name__ == "__main__":
    sys.exit(main())
