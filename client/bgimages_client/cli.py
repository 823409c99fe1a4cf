"""Command line on the client: upload (with a progress bar), list, select, delete, show."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bgimages_client._api import BackgroundImages
from bgimages_client._errors import BgImagesError
from bgimages_client._models import Image

# What to tell a person for each code the gateway answers.
HINTS: dict[str, str] = {
    "NOT_FITS": "The file is not a FITS file.",
    "TRUNCATED": "The FITS file is truncated: it ends before a header or data block does.",
    "BAD_HEADER": "A FITS header is malformed.",
    "NONSTANDARD_HEADER": "A FITS header breaks the FITS standard (a mandatory keyword's value or place).",
    "BAD_COMPRESSION": "The compressed file could not be decompressed.",
    "NO_IMAGE_HDU": "The file holds no image that can be displayed.",
    "INVALID_WCS": "An image in the file has no usable celestial WCS.",
    "TARGET_OUTSIDE_FIELD": "The OB's target is outside the image: choose an image that covers it.",
    "BOA_OUTSIDE_FIELD": "The BOA reference star is outside the image: the image must cover it too.",
    "TARGET_IN_CHIP_GAP": "The OB's target falls in a gap between chips.",
    "BOA_IN_CHIP_GAP": "The BOA reference star falls in a gap between chips.",
    "NO_FILTER": "The file names no filter: pass --bandpass (for example --bandpass Ks).",
    "TOO_LARGE": "The file is larger than the gateway accepts.",
    "TOO_MANY_HDUS": "The file has more HDUs than allowed.",
    "TOO_MANY_CARDS": "A header of the file (or all its headers together) has more cards than allowed.",
    "UNSUPPORTED_COMPRESSION": "This kind of compression is not supported.",
    "INVALID_ARGUMENT": "The request is malformed.",
    "NOT_FOUND": "No such image (or it is not visible to you).",
    "FORBIDDEN": "You may not do this.",
    "UNAUTHENTICATED": "Your token is missing, expired or not accepted: get a new one (--token).",
    "RUN_MISMATCH": "This OB belongs to another run: check --run.",
    "NOT_COMPATIBLE": "The image does not hold the OB's target (and BOA star).",
    "GONE": "The image was deleted or culled: please upload it again.",
    "UNKNOWN_RUN": "The gateway does not know this run (yet).",
    "PROCESSING_FAILED": "The image could not be processed; try again later or contact support.",
    "STORE_UNAVAILABLE": "The storage is unavailable; try again later.",
    "UNAVAILABLE": "The service is unavailable; try again later.",
    "INTERNAL": "The gateway failed; try again later or contact support.",
    "REQUEST_TIMEOUT": "The upload was too slow (it stalled or came under the minimum rate): try again.",
    "TOO_MANY_UPLOADS": "You have as many uploads in progress as allowed: wait for one to finish.",
    "BUSY": "The service is busy; try again in a little while.",
    "METHOD_NOT_ALLOWED": "The gateway does not take this method on this route (an older or newer client?).",
    "UNSUPPORTED_MEDIA_TYPE": "The gateway does not take this kind of body here.",
    "NOT_SUPPORTED": "The gateway does not offer this call.",
    "TOO_MANY_CHARTS": "The OB's own finding charts and the new set would pass p2's limit of 5.",
    "OB_NOT_EDITABLE": "p2 takes no changes to this OB now (its status).",
    "UPLOAD_OFFSET_MISMATCH": "The resumable upload stands elsewhere than this client thought: run it again.",
    "UPLOAD_LOCKED": "Another client is sending this upload now: wait for it, then run it again.",
    "UPLOAD_EXPIRED": "The resumable upload was left idle too long and removed: upload the file again.",
    "TUS_VERSION_UNSUPPORTED": "The gateway speaks another version of the tus protocol (another client?).",
}


def explain(err: BgImagesError) -> str:
    """The code and its hint, then each finding once. The gateway's detail joins the
    findings' messages, and a message may already name its HDU: neither is repeated."""
    lines = [f"error {err.code}: {HINTS.get(err.code, err.title or 'request refused')}"]
    findings: list[str] = []
    for finding in err.errors:
        message = str(finding.get("message", ""))
        hdu = finding.get("hdu")
        if hdu is not None and not message.startswith(("HDU ", "HDUs ")):
            message = f"HDU {hdu}: {message}"
        code = finding.get("code", "")
        text = f"{code}: {message}" if code and code != err.code else message
        if text and text not in findings:
            findings.append(text)
    if findings:
        lines += [f"  - {text}" for text in findings]
    elif err.detail:
        lines.append(f"  gateway says: {err.detail}")
    if err.url.endswith("/background-images/check"):
        lines.append("  (found in the file's headers, checked before sending: nothing was sent)")
    return "\n".join(lines)


def _describe(image: Image) -> str:
    owner = "mine" if image.owned_by_caller else f"shared by {image.owner_id}"
    return f"{image.fits_hash}  {image.file_name!r}  filter={image.filter or '-'}  ({owner})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bgimages", description="User background images: upload, list, select, delete."
    )
    p.add_argument(
        "--url", default=os.environ.get("BGIMAGES_URL", "http://127.0.0.1:8080"), help="gateway URL"
    )
    p.add_argument(
        "--token", default=os.environ.get("BGIMAGES_TOKEN", ""), help="bearer token (or BGIMAGES_TOKEN)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    def ob_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--ob", type=int, required=True, help="p2 OB id")
        q.add_argument("--run", required=True, help="the OB's run id")
        q.add_argument("--target", type=float, nargs=2, metavar=("RA", "DEC"), required=True, help="degrees")
        q.add_argument(
            "--boa", type=float, nargs=2, metavar=("RA", "DEC"), help="BOA reference star, degrees"
        )
        q.add_argument("--instrument", help="the run's instrument (FORS2, HAWKI, ...): sizes the Gaia image")
        q.add_argument("--obs-date", help="observation date YYYY-MM-DD of the Gaia image (default: today)")

    up = sub.add_parser("upload", help="upload a FITS file for an OB (it becomes the OB's background)")
    up.add_argument("file")
    ob_args(up)
    up.add_argument("--bandpass", help="filter to use when the file names none (p2api's bkg_lam)")
    up.add_argument("--no-progress", action="store_true", help="no progress bar")
    up.add_argument(
        "--one-shot",
        action="store_true",
        help="one POST of the whole file instead of a resumable upload (which resumes after a dropped "
        "connection, and when the same command runs again)",
    )
    up.add_argument(
        "--no-check-first",
        action="store_true",
        help="send the file without checking its headers first (they are checked after upload anyway)",
    )

    ls = sub.add_parser("list", help="what the selector offers for an OB")
    ob_args(ls)

    sel = sub.add_parser("select", help="choose the OB's background")
    sel.add_argument(
        "selection", help="default | gaia | survey|NAME | eso_im|DPID | user_bkg_image|<fits_hash>"
    )
    ob_args(sel)

    fc = sub.add_parser("fc", help="render the OB's finding charts into JPEG files")
    ob_args(fc)
    fc.add_argument("--out", default=".", help="folder the JPEGs are written to")
    fc.add_argument("--image", help="the custom chart's image (default: the OB's selection)")
    fc.add_argument("--mode", help="the instrument mode")
    fc.add_argument("--pa", type=float, default=0.0, help="position angle, degrees E of N")
    for name in ("prog-id", "pi-name", "ob-name", "target-name"):
        fc.add_argument(f"--{name}", default="")
    fc.add_argument("--stretch", help="linear, sqrt, log, power, arcsinh (aplpy's)")
    fc.add_argument("--pmin", type=float)
    fc.add_argument("--pmax", type=float)

    rm = sub.add_parser("delete", help="delete one of your images")
    rm.add_argument("fits_hash")

    show = sub.add_parser("show", help="one image's details")
    show.add_argument("fits_hash")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.token:
        print("error: no token: pass --token or set BGIMAGES_TOKEN", file=sys.stderr)
        return 2
    api = BackgroundImages(args.url, args.token)
    try:
        return _run(api, args)
    except BgImagesError as err:
        print(explain(err), file=sys.stderr)
        return 1


def _run(api: BackgroundImages, args: argparse.Namespace) -> int:
    boa = tuple(args.boa) if getattr(args, "boa", None) else None
    if args.command == "upload":
        from tqdm import tqdm

        size = os.path.getsize(args.file)
        with tqdm(
            total=size, unit="B", unit_scale=True, unit_divisor=1024, desc="upload", disable=args.no_progress
        ) as bar:

            def progress(sent: int, total: int) -> None:
                bar.update(sent - bar.n)  # a resumed upload starts where it stood

            send = api.upload if args.one_shot else api.upload_resumable
            image = send(
                args.file,
                args.ob,
                args.run,
                tuple(args.target),
                boa=boa,
                bandpass=args.bandpass,
                progress=progress,
                check_first=not args.no_check_first,
            )
        print(f"uploaded and selected for OB {args.ob}: {_describe(image)}")
        return 0
    if args.command == "list":
        listing = api.list_images(
            args.ob, args.run, tuple(args.target), boa=boa, instrument=args.instrument, obs_date=args.obs_date
        )
        selected = listing.selected.selection

        def mark(selection: str) -> str:
            return "(*)" if selection == selected else "( )"

        print(f"{mark('default')} default: {listing.default_survey.name}")
        for survey in listing.surveys:
            print(
                f"{mark(survey.selection)} {survey.selection}"
                + (f"  (band {survey.band})" if survey.band else "")
            )
        for title, images in (("my images", listing.own), ("shared images", listing.shared)):
            print(f"{title}:")
            for image in images:
                print(f"  {mark(image.selection)} {_describe(image)}")
            if not images:
                print("  (none)")
        gaia = listing.gaia
        if gaia is not None:
            state = "made" if gaia.image else "made when chosen"
            if not gaia.available:
                state = f"unavailable: {gaia.code}: {gaia.message}"
            print(f"{mark('gaia')} gaia: {gaia.name}  ({state})")
        print(
            "ESO archive:" + (f" unavailable: {listing.archive_problem}" if listing.archive_problem else "")
        )
        states = {"available": "fetched when chosen", "preparing": "being fetched", "ready": "stored"}
        for entry in listing.archive:
            state = states.get(entry.state, f"failed: {entry.code}: {entry.message}")
            when = (entry.observed or "")[:10]
            described = f"{entry.instrument}  filter={entry.filter or '-'}  {when}  ({state})"
            print(f"  {mark(entry.selection)} {entry.selection}  {described}")
        if not listing.archive and not listing.archive_problem:
            print("  (none)")
        listed = {"default", "gaia"} | {i.selection for i in listing.own + listing.shared}
        listed |= {s.selection for s in listing.surveys} | {a.selection for a in listing.archive}
        if selected not in listed:
            # Another source (gaia, a survey, an archive image), or a user image the caller may
            # display in this OB but not list (a delegate of a delegate): still the OB's choice.
            image = listing.selected.image
            print(f"(*) selected: {_describe(image) if image else selected}")
        for t in listing.tombstones:
            print(f"  removed: {t.file_name!r} {t.reason} on {t.removed_at}, please upload again")
        return 0
    if args.command == "select":
        chosen = api.select(
            args.ob,
            args.run,
            tuple(args.target),
            args.selection,
            boa=boa,
            instrument=args.instrument,
            obs_date=args.obs_date,
        )
        if chosen.preparing:
            print(
                f"{chosen.selection} is being fetched from the ESO archive; OB {args.ob} shows it once stored"
            )
        else:
            print(f"OB {args.ob} now uses {chosen.selection}")
        return 0
    if args.command == "fc":
        extra = {
            "image": args.image,
            "mode": args.mode,
            "position_angle": args.pa,
            "prog_id": args.prog_id,
            "pi_name": args.pi_name,
            "ob_name": args.ob_name,
            "target_name": args.target_name,
            "stretch": args.stretch,
            "pmin": args.pmin,
            "pmax": args.pmax,
        }
        found = api.finding_charts(
            args.ob,
            args.run,
            tuple(args.target),
            boa=boa,
            instrument=args.instrument,
            obs_date=args.obs_date,
            **{k: v for k, v in extra.items() if v not in (None, "")},
        )
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        for n, chart in enumerate(found, start=1):
            path = folder / f"ob{args.ob}_fc{n}_{chart.kind}.jpg"
            path.write_bytes(chart.jpeg)
            print(f"{path}  {chart.title}  ({len(chart.jpeg)} bytes)")
        return 0
    if args.command == "delete":
        tombstone = api.delete(args.fits_hash)
        print(f"deleted {tombstone.fits_hash} ({tombstone.file_name!r})")
        return 0
    if args.command == "show":
        image = api.get_image(args.fits_hash)
        print(_describe(image))
        for fp in image.footprints:
            print(f"  HDU {fp.hdu}: {fp.pixel_scale_arcsec:.3f} arcsec/pixel, corners {fp.corners}")
        print(f"  runs: {', '.join(image.run_ids)}")
        return 0
    raise AssertionError(args.command)
