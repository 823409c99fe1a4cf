"""The Python client (bgimages_client) and its command line against the running suite."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bgimages_client import BackgroundImages, BgImagesError
from bgimages_client.cli import HINTS, explain

from tests.gateway import harness
from tests.gateway.harness import Gateway, field, new_ob, new_user

TARGET = (150.0, 2.0)


def _client(gateway: Gateway, user: str, scope: str = "") -> BackgroundImages:
    return BackgroundImages(gateway.url, gateway.token(user, scope))


def test_client_round_trip(gateway: Gateway, tmp_path: Path) -> None:
    owner, delegate = new_user(), new_user()
    admin = _client(gateway, "p2:p2-server", "bgimages:admin")
    run = harness.new_run()
    pushed = admin.set_run(run, owner, [delegate])
    assert (pushed.owner_id, pushed.delegate_ids) == (owner, [delegate])
    api = _client(gateway, owner)
    ob = new_ob()
    path = field(tmp_path, "client.fits")
    seen: list[tuple[int, int]] = []

    image = api.upload(path, ob, run, TARGET, boa=(150.003, 2.002), progress=lambda s, t: seen.append((s, t)))
    assert image.fits_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert image.file_name == "client.fits" and image.filter == "R" and image.owned_by_caller
    assert seen and seen[-1] == (path.stat().st_size, path.stat().st_size)

    listing = api.list_images(ob, run, TARGET, boa=(150.003, 2.002))
    assert [i.fits_hash for i in listing.own] == [image.fits_hash]
    assert listing.selected.selection == image.selection
    assert listing.default_survey.name == harness.SURVEY_NAME
    assert _client(gateway, delegate).list_images(ob, run, TARGET).shared[0].fits_hash == image.fits_hash

    assert api.get_image(image.fits_hash).run_ids == [run]
    assert api.preview(image.fits_hash).startswith(b"\x89PNG")
    out = api.download_fits(image.fits_hash, tmp_path / "back.fits")
    assert out.read_bytes() == path.read_bytes()
    link = api.hips(image.fits_hash, ob)
    assert link.hips_url.startswith(gateway.url) and link.expires_at > 0

    assert api.select(ob, run, TARGET, "gaia").selection == "gaia"
    assert api.get_selection(ob, run).kind == "gaia"
    assert api.select(ob, run, TARGET, image.selection).image is not None

    with pytest.raises(BgImagesError) as err:
        _client(gateway, delegate).delete(image.fits_hash)
    assert (err.value.code, err.value.status) == ("FORBIDDEN", 403)
    assert api.delete(image.fits_hash).reason == "deleted"
    assert api.list_images(ob, run, TARGET).tombstones[0].fits_hash == image.fits_hash
    admin.remove_run(run)
    assert api.ready() == {"validator": True, "processor": True, "catalog": True, "store": True}


def test_client_errors_carry_the_code(gateway: Gateway, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    api = _client(gateway, owner)
    with pytest.raises(BgImagesError) as err:
        api.upload(field(tmp_path, ra=20.0, dec=-5.0), new_ob(), run, TARGET)
    assert err.value.code == "TARGET_OUTSIDE_FIELD" and err.value.status == 422
    assert err.value.errors and err.value.errors[0]["code"] == "TARGET_OUTSIDE_FIELD"
    with pytest.raises(BgImagesError) as err:
        api.get_image("f" * 64)
    assert err.value.code == "NOT_FOUND"
    with pytest.raises(BgImagesError) as err:
        BackgroundImages(gateway.url, "not-a-token").get_image("f" * 64)
    assert err.value.code == "UNAUTHENTICATED" and err.value.status == 401
    with pytest.raises(BgImagesError) as err:
        BackgroundImages("http://127.0.0.1:9", "t", timeout=2).get_image("f" * 64)
    assert err.value.code == "UNAVAILABLE" and err.value.status == 0


def _cli(gateway: Gateway, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BGIMAGES_URL": gateway.url, "BGIMAGES_TOKEN": gateway.token(user)}
    return subprocess.run(
        [sys.executable, "-m", "bgimages_client", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_command_line(gateway: Gateway, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    ob = new_ob()
    ob_args = ["--ob", str(ob), "--run", run, "--target", "150", "2"]
    path = field(tmp_path, "cli field.fits", filter_name=None)
    fits_hash = hashlib.sha256(path.read_bytes()).hexdigest()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _cli(gateway, owner, *args)

    refused = await asyncio.to_thread(cli, "upload", str(path), *ob_args)
    assert refused.returncode == 1
    assert "error NO_FILTER" in refused.stderr and "--bandpass" in refused.stderr

    done = await asyncio.to_thread(cli, "upload", str(path), *ob_args, "--bandpass", "Ks")
    assert done.returncode == 0, done.stderr
    assert f"uploaded and selected for OB {ob}: {fits_hash}" in done.stdout
    assert "100%" in done.stderr  # the tqdm bar

    listed = await asyncio.to_thread(cli, "list", *ob_args)
    assert listed.returncode == 0
    assert f"(*) {fits_hash}  'cli field.fits'  filter=Ks  (mine)" in listed.stdout
    assert "( ) default: " + harness.SURVEY_NAME in listed.stdout

    chosen = await asyncio.to_thread(cli, "select", "survey|DEMO-K", *ob_args)
    assert chosen.returncode == 0 and "now uses survey|DEMO-K" in chosen.stdout
    bad = await asyncio.to_thread(cli, "select", "nonsense", *ob_args)
    assert bad.returncode == 1 and "error INVALID_ARGUMENT" in bad.stderr

    shown = await asyncio.to_thread(cli, "show", fits_hash)
    assert shown.returncode == 0 and run in shown.stdout
    gone = await asyncio.to_thread(cli, "delete", fits_hash)
    assert gone.returncode == 0 and f"deleted {fits_hash}" in gone.stdout
    again = await asyncio.to_thread(cli, "delete", fits_hash)
    assert again.returncode == 1 and ("error GONE" in again.stderr or "error NOT_FOUND" in again.stderr)

    stranger = await asyncio.to_thread(
        _cli, gateway, new_user(), "upload", str(field(tmp_path, "s.fits")), *ob_args, "--no-progress"
    )
    assert stranger.returncode == 1 and "error FORBIDDEN" in stranger.stderr


async def test_command_line_lists_and_makes_the_gaia_image(gateway: Gateway) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    ob_args = ["--ob", str(new_ob()), "--run", run, "--target", "150", "2"]
    when = ["--instrument", "HAWKI", "--obs-date", "2030-01-01"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _cli(gateway, owner, *args)

    listed = await asyncio.to_thread(cli, "list", *ob_args, *when)
    assert listed.returncode == 0, listed.stderr
    assert "( ) gaia: Gaia DR3 (epoch 2030.00)  (made when chosen)" in listed.stdout
    chosen = await asyncio.to_thread(cli, "select", "gaia", *ob_args, *when)
    assert chosen.returncode == 0 and "now uses gaia" in chosen.stdout, chosen.stderr
    listed = await asyncio.to_thread(cli, "list", *ob_args, *when)
    assert "(*) gaia: Gaia DR3 (epoch 2030.00)  (made)" in listed.stdout, listed.stdout
    # The archive's image of the field (the development archive), fetched when chosen.
    dp = "eso_im|ADP.2015-05-11T10:19:53.607"
    assert f"( ) {dp}  FORS2  filter=R  2015-05-11  (" in listed.stdout, listed.stdout
    fetching = await asyncio.to_thread(cli, "select", dp, *ob_args)
    assert fetching.returncode == 0, fetching.stderr
    assert "being fetched from the ESO archive" in fetching.stdout or "now uses" in fetching.stdout
    for _ in range(60):
        listed = await asyncio.to_thread(cli, "list", *ob_args)
        if f"(*) {dp}" in listed.stdout:
            break
        await asyncio.sleep(0.5)
    assert f"(*) {dp}  FORS2  filter=R  2015-05-11  (stored)" in listed.stdout, listed.stdout
    bad = await asyncio.to_thread(cli, "list", *ob_args, "--obs-date", "2030-13-01")
    assert bad.returncode == 1 and "error INVALID_ARGUMENT" in bad.stderr and "obs_date" in bad.stderr


async def test_list_marks_what_a_delegate_of_a_delegate_sees(gateway: Gateway, tmp_path: Path) -> None:
    # The seed's D2: a delegate of run X only. D1 selected the owner's image for an OB of X;
    # D2 may not list the image, but the OB displays it, and `list` says so.
    owner, d1, d2 = new_user(), new_user(), new_user()
    run_r = gateway.new_run(owner, (d1,))
    run_x = gateway.new_run(new_user(), (d1, d2))
    image = _client(gateway, owner).upload(field(tmp_path, "owner's.fits"), new_ob(), run_r, TARGET)
    ob_x = new_ob()
    _client(gateway, d1).select(ob_x, run_x, TARGET, image.selection)
    out = await asyncio.to_thread(
        _cli, gateway, d2, "list", "--ob", str(ob_x), "--run", run_x, "--target", "150", "2"
    )
    assert out.returncode == 0, out.stderr
    assert "( ) default:" in out.stdout
    marked = [line for line in out.stdout.splitlines() if line.startswith("(*)")]
    assert marked == [f'(*) selected: {image.fits_hash}  "owner\'s.fits"  filter=R  (shared by {owner})']


def test_command_line_tells_each_finding_once() -> None:
    # The gateway's detail joins the findings' messages, and a message may name its HDU already.
    err = BgImagesError(
        422,
        "POST",
        "/api/v1/obs/1/background-images",
        "INVALID_WCS",
        "HDU 0: invalid WCS: singular matrix; no filter found",
        errors=[
            {"code": "INVALID_WCS", "hdu": 0, "message": "HDU 0: invalid WCS: singular matrix"},
            {"code": "NO_FILTER", "hdu": 1, "message": "no filter found"},
            {"code": "NO_FILTER", "hdu": 1, "message": "no filter found"},
        ],
    )
    assert explain(err).splitlines() == [
        f"error INVALID_WCS: {HINTS['INVALID_WCS']}",
        "  - HDU 0: invalid WCS: singular matrix",
        "  - NO_FILTER: HDU 1: no filter found",
    ]
    bare = BgImagesError(404, "GET", "/api/v1/images/f", "NOT_FOUND", "no such image")
    assert explain(bare).splitlines() == [
        f"error NOT_FOUND: {HINTS['NOT_FOUND']}",
        "  gateway says: no such image",
    ]
