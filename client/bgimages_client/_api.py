"""`BackgroundImages`: one method per call of the gateway's native API."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urljoin

import requests

from bgimages_client import _fits_headers
from bgimages_client._errors import BgImagesError
from bgimages_client._models import (
    FindingChart,
    HeaderCheck,
    HipsLink,
    Image,
    Listing,
    Run,
    Selection,
    Tombstone,
)

Position = tuple[float, float]
Progress = Callable[[int, int], None]  # (bytes sent so far, total)
TUS = {"Tus-Resumable": "1.0.0"}
# What the check before sending reads and sends at most (the gateway's CHECK_MAX_HEADER_BYTES).
CHECK_MAX_HEADER_BYTES = 16 << 20
CHECK_MAX_HDUS = 4000


class _ProgressReader:
    """A file wrapper that reports how much requests has read (and sent); from `start` on
    (a resumed upload), counting what went before."""

    def __init__(self, f: IO[bytes], total: int, progress: Progress | None, start: int = 0) -> None:
        self._f = f
        self._total = total
        self._sent = start
        self._start = start
        self._progress = progress
        f.seek(start)

    def __len__(self) -> int:
        return self._total - self._start

    def read(self, size: int = -1) -> bytes:
        # Larger reads than http.client's default make big uploads much cheaper.
        chunk = self._f.read(max(size, 1 << 20) if size > 0 else size)
        self._sent += len(chunk)
        if self._progress is not None and chunk:
            self._progress(self._sent, self._total)
        return chunk


def _ob_params(
    run_id: str,
    target: Position,
    boa: Position | None,
    instrument: str | None = None,
    obs_date: str | None = None,
) -> dict[str, str]:
    params = {"run_id": run_id, "target_ra": repr(float(target[0])), "target_dec": repr(float(target[1]))}
    if boa is not None:
        params["boa_ra"], params["boa_dec"] = repr(float(boa[0])), repr(float(boa[1]))
    if instrument:
        params["instrument"] = instrument
    if obs_date:
        params["obs_date"] = obs_date
    return params


def _ob_body(
    run_id: str,
    target: Position,
    boa: Position | None,
    instrument: str | None = None,
    obs_date: str | None = None,
) -> dict[str, Any]:
    """The OB context as a JSON body: positions as numbers."""
    body: dict[str, Any] = dict(_ob_params(run_id, target, boa, instrument, obs_date))
    for key in ("target_ra", "target_dec", "boa_ra", "boa_dec"):
        if key in body:
            body[key] = float(body[key])
    return body


def _tus_metadata(fields: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


class _ResumeFile:
    """Where the URLs of resumable uploads in progress are kept, by the file and OB they are for."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        default = (
            os.environ.get("BGIMAGES_RESUME_FILE") or Path.home() / ".cache" / "bgimages" / "uploads.json"
        )
        self.path = Path(path or default)

    def fingerprint(
        self, url: str, path: Path, ob_id: int, run_id: str, target: Position, boa: Position | None
    ) -> str:
        st = path.stat()
        key = [url, str(path.resolve()), st.st_size, st.st_mtime_ns, int(ob_id), run_id, list(target), boa]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, fingerprint: str) -> str | None:
        return self._load().get(fingerprint)

    def put(self, fingerprint: str, url: str) -> None:
        data = self._load()
        data[fingerprint] = url
        self._save(data)

    def drop(self, fingerprint: str) -> None:
        data = self._load()
        if data.pop(fingerprint, None) is not None:
            self._save(data)

    def _save(self, data: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


class BackgroundImages:
    """A connection to the gateway for one user (its bearer token).

    Every method raises `BgImagesError` (with the gateway's `code`) when the
    request is refused.
    """

    def __init__(
        self, url: str, token: str, *, timeout: float = 600.0, session: requests.Session | None = None
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["Accept"] = "application/json, application/problem+json"

    # ---- transport ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, absolute: bool = False, **kwargs: Any) -> requests.Response:
        url = path if absolute else self.url + path
        kwargs.setdefault("timeout", self.timeout)
        try:
            resp = self.session.request(method, url, **kwargs)
        except (requests.RequestException, http.client.HTTPException) as exc:
            # A connection that broke (a garbled answer too): the gateway was not reached.
            raise BgImagesError(
                0, method, url, "UNAVAILABLE", f"the gateway could not be reached: {exc}"
            ) from exc
        if resp.status_code >= 400:
            raise self._error(resp, method, url)
        return resp

    @staticmethod
    def _error(resp: requests.Response, method: str, url: str) -> BgImagesError:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return BgImagesError(
            resp.status_code,
            method,
            url,
            str(body.get("code") or f"HTTP_{resp.status_code}"),
            str(body.get("detail") or resp.reason or ""),
            title=str(body.get("title", "")),
            errors=body.get("errors") if isinstance(body.get("errors"), list) else None,
            body=body,
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # ---- images -------------------------------------------------------------------------------

    def upload(
        self,
        path: str | os.PathLike[str],
        ob_id: int,
        run_id: str,
        target: Position,
        *,
        boa: Position | None = None,
        bandpass: str | None = None,
        file_name: str | None = None,
        progress: Progress | None = None,
        check_first: bool = True,
    ) -> Image:
        """Uploads a FITS file (streamed) for an OB; it becomes the OB's selection.

        With `check_first` (the default) the file's headers are checked before its data is
        sent (`check_headers`): a file its headers refuse raises at once, with the code the
        upload would get, and nothing is sent."""
        path = Path(path)
        if check_first:
            self.check_headers(path, ob_id, run_id, target, boa=boa, bandpass=bandpass)
        params = _ob_params(run_id, target, boa)
        params["file_name"] = file_name or path.name
        if bandpass:
            params["bandpass"] = bandpass
        gz = path.suffix.lower() in (".gz", ".z")
        headers = {"Content-Type": "application/gzip" if gz else "application/fits"}
        total = path.stat().st_size
        with path.open("rb") as f:
            body = _ProgressReader(f, total, progress)
            data = self._json(
                "POST",
                f"/api/v1/obs/{int(ob_id)}/background-images",
                params=params,
                data=body,
                headers=headers,
            )
        return Image.from_json(data)

    def upload_resumable(
        self,
        path: str | os.PathLike[str],
        ob_id: int,
        run_id: str,
        target: Position,
        *,
        boa: Position | None = None,
        bandpass: str | None = None,
        file_name: str | None = None,
        progress: Progress | None = None,
        check_first: bool = True,
        retries: int = 10,
        resume_file: str | os.PathLike[str] | None = None,
    ) -> Image:
        """Uploads a FITS file as a resumable (tus 1.0) upload: a dropped connection costs
        only the bytes in flight. The upload is resumed from where the gateway stands, up to
        `retries` times in a row with backoff; its URL is kept in `resume_file` (default
        ~/.cache/bgimages/uploads.json, or BGIMAGES_RESUME_FILE) so that the same call after
        a crash or a Ctrl-C resumes it too. Answers (or raises) as `upload` does."""
        path = Path(path)
        if check_first:
            self.check_headers(path, ob_id, run_id, target, boa=boa, bandpass=bandpass)
        size = path.stat().st_size
        resumes = _ResumeFile(resume_file)
        fingerprint = resumes.fingerprint(self.url, path, ob_id, run_id, target, boa)
        url = resumes.get(fingerprint)
        offset = self._tus_offset(url) if url else None
        if url is None or offset is None:
            meta = {**_ob_params(run_id, target, boa), "filename": file_name or path.name}
            if bandpass:
                meta["bandpass"] = bandpass
            resp = self._request(
                "POST",
                f"/api/v1/obs/{int(ob_id)}/uploads",
                headers={**TUS, "Upload-Length": str(size), "Upload-Metadata": _tus_metadata(meta)},
            )
            url = urljoin(self.url + "/", resp.headers["Location"])
            resumes.put(fingerprint, url)
            offset = 0
        failures = 0
        while True:
            try:
                with path.open("rb") as f:
                    body = _ProgressReader(f, size, progress, offset)
                    resp = self._request(
                        "PATCH",
                        url,
                        data=body,
                        headers={
                            **TUS,
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": str(offset),
                            "Content-Length": str(size - offset),
                        },
                        absolute=True,
                    )
            except BgImagesError as err:
                if err.status == 0 or err.code in ("UPLOAD_LOCKED", "UPLOAD_OFFSET_MISMATCH", "BUSY"):
                    failures += 1
                    if failures > retries:
                        raise
                    time.sleep(0.0 if failures == 1 else min(0.5 * 2 ** (failures - 2), 15.0))
                    told = err.body.get("offset") if err.code == "UPLOAD_OFFSET_MISMATCH" else None
                    resumed = told if isinstance(told, int) else self._tus_offset(url)
                    if resumed is not None:
                        offset = resumed
                        continue
                resumes.drop(fingerprint)
                raise
            if resp.status_code == 201:
                resumes.drop(fingerprint)
                return Image.from_json(resp.json())
            offset = int(resp.headers["Upload-Offset"])
            failures = 0

    def _tus_offset(self, url: str) -> int | None:
        """Where the upload at `url` stands; None when it is gone (expired, ended, not ours)."""
        try:
            resp = self._request("HEAD", url, headers=TUS, absolute=True)
        except BgImagesError as err:
            if err.status in (404, 410):
                return None
            raise
        return int(resp.headers["Upload-Offset"])

    def check_headers(
        self,
        path: str | os.PathLike[str],
        ob_id: int,
        run_id: str,
        target: Position,
        *,
        boa: Position | None = None,
        bandpass: str | None = None,
    ) -> HeaderCheck:
        """The check before sending: reads only the file's headers (each HDU's data skipped)
        and has the gateway judge them as the upload would. Raises BgImagesError with the
        upload's code (TARGET_OUTSIDE_FIELD, INVALID_WCS, NO_FILTER, ...) when they refuse the
        file. A gzip or .Z file, or headers over the route's limit, are not checked first
        (`checked` False): the upload checks them."""
        path = Path(path)
        size = path.stat().st_size
        with path.open("rb") as f:
            try:
                read = _fits_headers.read_headers(f, size, CHECK_MAX_HEADER_BYTES, CHECK_MAX_HDUS)
            except _fits_headers.TooLarge:
                return HeaderCheck(checked=False)
        if read.compressed:
            return HeaderCheck(checked=False)
        fields = _ob_params(run_id, target, boa)
        if bandpass:
            fields["bandpass"] = bandpass
        fields["file_size"] = str(size)
        layout = [
            {"offset": s.offset, "header_bytes": len(s.header), "data_bytes": s.data_bytes}
            for s in read.segments
        ]
        fields["layout"] = json.dumps(layout, separators=(",", ":"))
        headers = b"".join(s.header for s in read.segments)
        try:
            data = self._json(
                "POST",
                f"/api/v1/obs/{int(ob_id)}/background-images/check",
                data=fields,
                files={"headers": ("headers", headers, "application/octet-stream")},
            )
        except BgImagesError as err:
            if err.code == "TOO_LARGE" and err.body.get("part") == "headers":
                return HeaderCheck(checked=False)  # more headers than the route takes: checked after upload
            raise
        return HeaderCheck.from_json(data)

    def list_images(
        self,
        ob_id: int,
        run_id: str,
        target: Position,
        *,
        boa: Position | None = None,
        instrument: str | None = None,
        obs_date: str | None = None,
    ) -> Listing:
        """What the selector shows for the OB: default survey, own and shared images, the OB's
        Gaia image (sized by `instrument`, its stars where they are on `obs_date`, YYYY-MM-DD,
        today by default), selection, tombstones."""
        params = _ob_params(run_id, target, boa, instrument, obs_date)
        data = self._json("GET", f"/api/v1/obs/{int(ob_id)}/background-images", params=params)
        return Listing.from_json(data)

    def select(
        self,
        ob_id: int,
        run_id: str,
        target: Position,
        selection: str,
        *,
        boa: Position | None = None,
        instrument: str | None = None,
        obs_date: str | None = None,
    ) -> Selection:
        """Uses a background for the OB: `default`, `gaia`, `survey|NAME`, `eso_im|DPID`,
        `user_bkg_image|<fits_hash>`. `gaia` makes the OB's Gaia image first when it is not
        stored (a few seconds)."""
        body = {**_ob_body(run_id, target, boa, instrument, obs_date), "selection": selection}
        return Selection.from_json(self._json("PUT", f"/api/v1/obs/{int(ob_id)}/background-image", json=body))

    def finding_charts(
        self,
        ob_id: int,
        run_id: str,
        target: Position,
        *,
        boa: Position | None = None,
        instrument: str | None = None,
        obs_date: str | None = None,
        **chart: Any,
    ) -> list[FindingChart]:
        """The OB's finding charts (JPEG): the default survey's, the Gaia image's, and the
        custom image's (`image=`, else the OB's selection when it is one). `chart` takes the
        route's other fields: mode, position_angle, prog_id, pi_name, ob_name, target_name,
        guide_ra, guide_dec, stretch, exponent, pmin, pmax, c_stretch, ..., GAIA_im_IQ."""
        body = {**_ob_body(run_id, target, boa, instrument, obs_date), **chart}
        data = self._json("POST", f"/api/v1/obs/{int(ob_id)}/finding-charts", json=body)
        return [FindingChart.from_json(c) for c in data["charts"]]

    def get_selection(self, ob_id: int, run_id: str = "") -> Selection:
        params = {"run_id": run_id} if run_id else {}
        return Selection.from_json(
            self._json("GET", f"/api/v1/obs/{int(ob_id)}/background-image", params=params)
        )

    def get_image(self, fits_hash: str) -> Image:
        return Image.from_json(self._json("GET", f"/api/v1/images/{quote(fits_hash, safe='')}"))

    def delete(self, fits_hash: str) -> Tombstone:
        """Deletes one of your images (OBs that used it fall back to the default survey)."""
        return Tombstone.from_json(self._json("DELETE", f"/api/v1/images/{quote(fits_hash, safe='')}"))

    def preview(self, fits_hash: str, ob_id: int | None = None) -> bytes:
        params = {"ob_id": str(ob_id)} if ob_id is not None else {}
        return self._request(
            "GET", f"/api/v1/images/{quote(fits_hash, safe='')}/preview.png", params=params
        ).content

    def download_fits(self, fits_hash: str, dest: str | os.PathLike[str], ob_id: int | None = None) -> Path:
        """Streams the stored FITS (the mosaic of a MEF) to `dest`."""
        params = {"ob_id": str(ob_id)} if ob_id is not None else {}
        resp = self._request(
            "GET", f"/api/v1/images/{quote(fits_hash, safe='')}/fits", params=params, stream=True
        )
        dest = Path(dest)
        with dest.open("wb") as out:
            for chunk in resp.iter_content(1 << 20):
                out.write(chunk)
        return dest

    def hips(self, fits_hash: str, ob_id: int | None = None) -> HipsLink:
        """A HiPS base URL for Aladin Lite, with a signed expiring token in its path."""
        params = {"ob_id": str(ob_id)} if ob_id is not None else {}
        data = self._json("GET", f"/api/v1/images/{quote(fits_hash, safe='')}/hips", params=params)
        return HipsLink(data["fits_hash"], data["hips_url"], int(data["expires_at"]))

    # ---- runs (admin) -------------------------------------------------------------------------

    def set_run(self, run_id: str, owner_id: str, delegate_ids: list[str] | tuple[str, ...] = ()) -> Run:
        """Sets a run's owner and Phase 2 delegates (needs scope bgimages:admin)."""
        data = self._json(
            "PUT",
            f"/api/v1/runs/{quote(run_id, safe='')}",
            json={"owner_id": owner_id, "delegate_ids": list(delegate_ids)},
        )
        return Run(data["run_id"], data["owner_id"], list(data["delegate_ids"]))

    def remove_run(self, run_id: str) -> None:
        self._request("DELETE", f"/api/v1/runs/{quote(run_id, safe='')}")

    # ---- service ------------------------------------------------------------------------------

    def ready(self) -> dict[str, bool]:
        """The gateway's readiness checks (raises UNAVAILABLE when one fails)."""
        checks: dict[str, bool] = self._json("GET", "/readyz")["checks"]
        return checks
