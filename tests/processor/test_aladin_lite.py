"""Our HiPS in Aladin Lite (the npm package the gateway serves, in Debian's
Chromium): its 16-bit FITS tiles (BSCALE/BZERO, BLANK) drawn as its PNG
tiles are, the blank around the image transparent, not black."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from PIL import Image, ImageDraw
from playwright.async_api import async_playwright

from services.processor import hips, source
from services.processor.observation import Observation
from tests.fitsgen import tan_wcs
from tests.processor.skyfiles import DEC, RA, write_sky

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ALADIN_JS = ROOT / "node_modules" / "aladin-lite" / "dist" / "aladin.js"
CHROMIUM = "/usr/bin/chromium"
EMPTY = (60, 60, 60)  # Aladin Lite's background where nothing is drawn
SIZE, SCALE = 512, 0.4
# The first survey is a path with nothing (no tiles): were it /hips, Aladin Lite could ask for a few
# tiles of its default format before the layer of the format under test replaces it.
PAGE = """<!doctype html><html><body style="margin:0">
<div id="aladin" style="width:600px;height:600px"></div>
<script type="module">
import A from "/aladin.js";
await A.init;
const aladin = A.aladin("#aladin", {target: "%(ra)s %(dec)s", fov: 0.12, cooFrame: "ICRS", survey: "/none",
  hipsList: [], log: false, showReticle: false, showLayersControl: false, showGotoControl: false,
  showSettingsControl: false, showShareControl: false, showProjectionControl: false,
  showFullscreenControl: false, showSimbadPointerControl: false, showCooGridControl: false,
  showContextMenu: false, showFrame: false, showZoomControl: false});
aladin.setBaseImageLayer(A.imageHiPS("/hips", {name: "test", imgFormat: "%(format)s"}));
window.aladin = aladin;
window.ready = true;
</script></body></html>"""


@pytest.fixture(scope="module")
def hips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("aladin")
    shape = (SIZE, SIZE)
    rng = np.random.default_rng(1)
    stars = [(RA + float(a), DEC + float(b), 3000.0) for a, b in rng.uniform(-0.02, 0.02, (12, 2))]
    path = write_sky(tmp / "img.fits", tan_wcs(RA, DEC, SCALE, shape), shape, stars=stars, noise=3.0)
    out = tmp / "hips"
    image, hdul = source.open_image(path)
    with hdul:
        hips.build_hips(
            image, hips.DirectorySink(out), creator_did="ivo://test/al", observation=Observation.of("R")
        )
    return out


@pytest.fixture
async def server(hips_dir: Path) -> AsyncIterator[str]:
    if not ALADIN_JS.exists():
        pytest.fail("Aladin Lite is not installed (make setup runs npm ci)")

    async def page(request: web.Request) -> web.Response:
        text = PAGE % {"ra": RA, "dec": DEC, "format": request.query["format"]}
        return web.Response(text=text, content_type="text/html")

    async def aladin(_: web.Request) -> web.FileResponse:
        return web.FileResponse(ALADIN_JS)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/aladin.js", aladin)
    app.router.add_static("/hips/", hips_dir)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def render(base: str, fmt: str) -> tuple[np.ndarray, list[list[float]], list[tuple[int, str]]]:
    """Aladin Lite's view (RGB), the image's corners on it, the tile responses."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium (make setup installs it)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page(viewport={"width": 600, "height": 600})
            tiles: list[tuple[int, str]] = []
            page.on("response", lambda r: tiles.append((r.status, r.url)) if "/Npix" in r.url else None)
            await page.goto(f"{base}/?format={fmt}")
            await page.wait_for_function("() => window.ready === true", timeout=60000)
            count = -1
            while count != len(tiles):  # until no tile arrived for 3 s
                count = len(tiles)
                await page.wait_for_timeout(3000)
            shot = await page.locator("#aladin").screenshot()
            half = SIZE * SCALE / 3600 / 2
            corners = await page.evaluate(
                "(c) => c.map(([ra, dec]) => window.aladin.world2pix(ra, dec))",
                [
                    [RA - half, DEC - half],
                    [RA + half, DEC - half],
                    [RA + half, DEC + half],
                    [RA - half, DEC + half],
                ],
            )
        finally:
            await browser.close()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int), corners, tiles


def footprint_mask(corners: list[list[float]], grow: float) -> np.ndarray:
    """Screen pixels inside the image's footprint grown (or shrunk) by `grow` pixels."""
    pts = np.array(corners)
    centre = pts.mean(axis=0)
    grown = centre + (pts - centre) * (1 + grow / np.abs(pts - centre).max())
    mask = Image.new("L", (600, 600), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in grown], fill=1)
    return np.asarray(mask).astype(bool)


async def test_fits_and_png_tiles_look_alike_and_blank_is_transparent(server: str) -> None:
    views = {}
    for fmt in ("fits", "png"):
        view, corners, tiles = await render(server, fmt)
        shown = [url for status, url in tiles if status == 200]
        assert shown and all(url.endswith(f".{fmt}") for url in shown), tiles
        inside = footprint_mask(corners, -6)
        outside = ~footprint_mask(corners, 6)
        ring = np.zeros_like(outside)
        ring[60:540, 60:540] = True  # away from Aladin's labels and logo
        # The image is drawn (sky noise and stars), the rest shows the background.
        assert inside.sum() > 10000
        assert (view[inside] == EMPTY).all(axis=1).mean() < 0.02, fmt
        assert view[inside].std() > 5, fmt
        assert (view[outside & ring] == EMPTY).all(), fmt
        views[fmt] = view
    # The same picture (FITS cut by Aladin from hips_pixel_cut, PNG by us).
    common = footprint_mask(corners, -6)
    assert np.abs(views["fits"] - views["png"])[common].mean() < 1.5
