"""The Background-image page in a real browser (Debian's Chromium, headless).

Load the page, upload a generated FITS through the Upload button, see it
selected and drawn by Aladin Lite (tile requests answered 200, pixels on the
canvas where the image lies), switch back to the default survey, delete the
image, see it gone. A file name that is HTML stays text. The first view says
what to do; a file without a filter is uploaded with the bandpass field; the
processing after the last byte shows; target and BOA star are two labelled
markers; a paw-print is shown whole; a refusal tells each finding once; long
file names stay on one line. Screenshots are kept under test-artifacts/browser/.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
import yarl
from multidict import CIMultiDict
from PIL import Image
from playwright.async_api import Browser, Error, FilePayload, Page, Response, async_playwright

from services.devrun import Suite
from tests import contract
from tests.fitsgen import streamed_tan_header, write_image
from tests.gateway import harness
from tests.gateway.harness import Gateway, field, new_ob, new_user

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
TARGET = (150.0, 2.0)
BOA = (150.004, 2.003)
# Aladin Lite's background where nothing is drawn.
EMPTY = np.array([60, 60, 60])

# Records what the page does that a user would see only in passing.
WATCH = """
window.__busy = [];
window.__phases = [];
window.__dialogs = 0;
new MutationObserver(() => {
  const b = document.getElementById('upload-button');
  if (b) window.__busy.push(b.getAttribute('aria-busy'));
  const phase = document.body && document.body.dataset.upload;
  const text = document.getElementById('upload-text');
  if (phase !== undefined) window.__phases.push(phase + ':' + (text ? text.textContent : ''));
  if (phase === 'processing' && !window.__processing) {
    const bar = document.getElementById('upload-progress');
    window.__processing = {
      text: text.textContent,
      spinner: !b.querySelector('.spinner').hidden,
      busy: b.getAttribute('aria-busy'),
      indeterminate: !bar.hidden && !bar.hasAttribute('value'),
      status: document.getElementById('status').textContent,
    };
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['aria-busy', 'data-upload']});
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium (make setup installs it)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        await asyncio.gather(*CHECKS)  # what the page received, held to the OpenAPI document
        CHECKS.clear()
        await b.close()


CHECKS: list[asyncio.Future[None]] = []


async def check_response(resp: Response) -> None:
    """The page's response against the gateway's OpenAPI document (mismatches are recorded)."""
    try:
        headers = CIMultiDict(await resp.all_headers())
        json_body = headers.get("content-type", "").split(";")[0] in contract.JSON_TYPES
        body = await resp.body() if json_body else None
    except Error:
        return  # the page went away before the body came
    method = resp.request.method
    url = yarl.URL(resp.url)
    with contextlib.suppress(contract.Mismatch):
        contract.check(method, resp.url, url.raw_path, resp.status, headers, body)


class PageLog:
    """Responses of HiPS requests, console messages and page errors."""

    def __init__(self, page: Page) -> None:
        self.hips: list[tuple[int, str]] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("response", self._response)
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _response(self, resp: Response) -> None:
        CHECKS.append(asyncio.ensure_future(check_response(resp)))
        if "/hips/" in resp.url:
            self.hips.append((resp.status, resp.url))

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "Refused to" in m]


async def new_page(browser: Browser, gateway: Gateway, ob: int, run: str) -> tuple[Page, PageLog]:
    """The page for one OB, not loaded yet."""
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    log = PageLog(page)
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await page.add_init_script(WATCH)
    fragment = f"ob={ob}&run={run}&ra={TARGET[0]}&dec={TARGET[1]}&boa_ra={BOA[0]}&boa_dec={BOA[1]}"
    await page.goto(f"{gateway.url}/#{fragment}")
    await page.wait_for_function("() => document.body.dataset.ready === 'yes'")
    return page, log


async def open_page(browser: Browser, gateway: Gateway, user: str, ob: int, run: str) -> tuple[Page, PageLog]:
    page, log = await new_page(browser, gateway, ob, run)
    await page.fill("#ctx-token", gateway.token(user))
    await page.click("#ctx-load")
    await page.wait_for_function("() => document.body.dataset.display === 'default'", timeout=30000)
    return page, log


async def aladin_pixels(page: Page, name: str) -> np.ndarray:
    """A screenshot of the Aladin Lite view, kept as an artefact, as an RGB array."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = await page.locator("#aladin").screenshot(path=str(ARTIFACTS / f"{name}-aladin.png"))
    await page.screenshot(path=str(ARTIFACTS / f"{name}-page.png"), full_page=True)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def centre(pixels: np.ndarray, fraction: float = 0.3) -> np.ndarray:
    h, w, _ = pixels.shape
    dh, dw = int(h * fraction / 2), int(w * fraction / 2)
    return pixels[h // 2 - dh : h // 2 + dh, w // 2 - dw : w // 2 + dw]


async def settle(page: Page, log: PageLog, seconds: float = 2.0) -> None:
    """Waits until no new HiPS response arrived for `seconds` (Aladin has drawn what it fetched)."""
    count = -1
    while count != len(log.hips):
        count = len(log.hips)
        await page.wait_for_timeout(seconds * 1000)


async def test_upload_select_display_switch_delete(
    browser: Browser, gateway: Gateway, tmp_path: Path
) -> None:
    user = new_user()
    run = gateway.new_run(user)
    ob = new_ob()
    rng = np.random.default_rng(7)
    stars = [(TARGET[0] + dx, TARGET[1] + dy, 30000.0) for dx, dy in rng.uniform(-0.015, 0.015, (40, 2))]
    fits_path = write_image(tmp_path / "M83 field.fits", ra=TARGET[0], dec=TARGET[1], size=512, stars=stars)

    page, log = await open_page(browser, gateway, user, ob, run)
    default_view = await aladin_pixels(page, "1-default-survey")
    assert await page.is_checked("input[value='default']")
    assert "Test survey" in await page.inner_text("#choices")

    # Upload through the button: the spinner shows while it runs, then the image is selected.
    await page.set_input_files("#upload-input", str(fits_path))
    await page.wait_for_function(
        "() => (document.body.dataset.selected || '').startsWith('user_bkg_image|')", timeout=120000
    )
    selection = await page.evaluate("() => document.body.dataset.selected")
    fits_hash = selection.split("|", 1)[1]
    await page.wait_for_function("(s) => document.body.dataset.display === s", arg=selection, timeout=30000)
    assert "true" in await page.evaluate("() => window.__busy"), "the Upload button never showed it was busy"
    # The bar while the bytes go up, then "Processing…" until the gateway answers.
    phases = await page.evaluate("() => window.__phases")
    assert phases.index("processing:Processing…") > phases.index("sending:Uploading…"), phases
    assert phases[-1] == ":Upload", phases
    assert await page.evaluate("() => document.querySelector('#upload-button .spinner').hidden")
    row = page.locator(f".choice[data-fits-hash='{fits_hash}']")
    assert await row.locator("input[type=radio]").is_checked()
    assert await row.locator(".name").inner_text() == "M83 field.fits"
    assert await row.locator("button.trash").count() == 1
    assert "selected background" in await page.inner_text("#status")

    # Aladin Lite fetched the image's HiPS through the token URL and drew it.
    await settle(page, log)
    image_view = await aladin_pixels(page, "2-uploaded-image")
    ours = [(s, u) for s, u in log.hips if f"/images/{fits_hash}/hips/" in u]
    assert any(u.endswith("/properties") and s == 200 for s, u in ours), ours
    tiles = [(s, u) for s, u in ours if re.search(r"/Norder\d+/Dir\d+/Npix\d+\.(png|fits)$", u)]
    # Every tile the processor wrote answers 200; Aladin Lite also asks for neighbouring
    # tiles of empty sky, which a HiPS leaves out (404, as the HiPS standard allows).
    keys = await gateway.store_keys()
    stored = {
        k.split("/hips/", 1)[1] for k in keys if k.startswith(f"content/{fits_hash}/") and "/hips/" in k
    }
    answered = {u.split("/hips/", 1)[1].split("/", 1)[1]: s for s, u in tiles}
    assert [t for t, s in answered.items() if s == 200] and all(s in (200, 404) for s in answered.values())
    assert {t: s for t, s in answered.items() if (s == 200) != (t in stored)} == {}
    middle = centre(image_view)
    drawn = np.abs(middle - EMPTY).sum(axis=2) > 12
    assert drawn.mean() > 0.9, f"only {drawn.mean():.0%} of the image area is drawn"
    assert middle.std() > 8, "the image area is flat: no image drawn"
    assert np.abs(centre(image_view) - centre(default_view)).mean() > 5, "the view did not change"
    # The bright stars are there (near white), and the target marker (red).
    assert (middle.min(axis=2) > 200).sum() > 20, "no stars visible"
    red = (image_view[..., 0] > 180) & (image_view[..., 1] < 90) & (image_view[..., 2] < 90)
    assert red.sum() > 10, "the target marker is not drawn"
    cyan = (image_view[..., 0] < 90) & (image_view[..., 1] > 170) & (image_view[..., 2] > 190)
    assert cyan.sum() > 10, "the BOA star marker is not drawn"
    await assert_markers(page)
    assert log.csp_violations() == [], log.csp_violations()

    # Back to the default survey.
    await page.check("input[value='default']")
    await page.wait_for_function("() => document.body.dataset.display === 'default'", timeout=30000)
    await settle(page, log, 1.0)
    back = await aladin_pixels(page, "3-back-to-default")
    assert np.abs(centre(back) - centre(image_view)).mean() > 5
    listing = await _listing(gateway, user, ob, run)
    assert listing["selected"]["selection"] == "default"

    # Delete it with the trash icon: gone from the list, shown as removed.
    await row.locator("button.trash").click()
    await page.wait_for_selector(f".choice[data-fits-hash='{fits_hash}'].tombstone", timeout=30000)
    assert await page.locator(f".choice[data-fits-hash='{fits_hash}']:not(.tombstone)").count() == 0
    tomb = await page.inner_text(f".choice.tombstone[data-fits-hash='{fits_hash}']")
    assert "M83 field.fits" in tomb and "deleted on" in tomb and "please upload again" in tomb
    assert await page.is_disabled(f".choice.tombstone[data-fits-hash='{fits_hash}'] input")
    await aladin_pixels(page, "4-deleted")
    listing = await _listing(gateway, user, ob, run)
    assert listing["own"] == []
    assert log.errors == [], log.errors
    await page.close()


async def test_a_named_survey_is_chosen_and_shown_from_its_hips(browser: Browser, gateway: Gateway) -> None:
    user = new_user()
    run = gateway.new_run(user)
    ob = new_ob()
    page, log = await open_page(browser, gateway, user, ob, run)
    surveys: list[tuple[int, str]] = []

    def seen(resp: Response) -> None:
        if "/surveys/DEMO-" in resp.url:
            surveys.append((resp.status, resp.url))

    page.on("response", seen)
    default_view = await aladin_pixels(page, "12-before-survey")
    # A section of its own, one row per named survey, with the band.
    box = page.locator(".group", has=page.locator("h3", has_text="Surveys"))
    assert await box.locator(".choice .name").all_inner_texts() == ["DEMO-R", "DEMO-K"]
    assert "band Ks" in await box.locator(".choice[data-survey='DEMO-K'] .meta").inner_text()

    await page.check("input[value='survey|DEMO-K']")
    await page.wait_for_function("() => document.body.dataset.display === 'survey|DEMO-K'", timeout=30000)
    await settle(page, log, 1.0)
    while not [u for s, u in surveys if s == 200 and "/Norder" in u]:
        await page.wait_for_timeout(500)  # the first tiles come after the properties
    await settle(page, log, 1.0)
    view = await aladin_pixels(page, "12-survey-DEMO-K")
    # Aladin Lite asked the gateway for DEMO-K's own HiPS: its properties and its tiles.
    ours = [(s, u) for s, u in surveys if "/surveys/DEMO-K/" in u]
    assert any(u.endswith("/surveys/DEMO-K/properties") and s == 200 for s, u in ours), ours
    assert [u for s, u in ours if s == 200 and re.search(r"/Norder\d+/(Dir\d+/Npix\d+|Allsky)\.", u)], ours
    assert await page.is_checked("input[value='survey|DEMO-K']")
    assert await page.inner_text("#display-caption") == "DEMO-K (band Ks)"
    assert np.abs(centre(view) - centre(default_view)).mean() > 5, "the view did not change"
    listing = await _listing(gateway, user, ob, run)
    assert listing["selected"]["selection"] == "survey|DEMO-K"
    # The layer's name is ours; the page's list shows no "Other" row for a listed survey.
    assert await page.locator(".group h3", has_text="Other").count() == 0
    assert log.csp_violations() == [] and log.errors == [], (log.csp_violations(), log.errors)
    await page.close()


async def test_file_names_are_text(browser: Browser, gateway: Gateway, tmp_path: Path) -> None:
    user = new_user()
    run = gateway.new_run(user)
    ob = new_ob()
    page, log = await open_page(browser, gateway, user, ob, run)
    # Browsers send base names only (no "/"), so the script tags stay open.
    names = ["<script>window.__xss = 1;.fits", '<img src=x onerror="window.__xss = 2">.fits']
    objects = ['<svg onload="window.__xss = 3">', "<script>window.__xss = 4;"]
    for n, name in enumerate(names):
        extra = {"SEQ": n, "OBJECT": objects[n]}
        path = write_image(tmp_path / f"plain{n}.fits", ra=TARGET[0], dec=TARGET[1], extra=extra)
        await page.set_input_files(
            "#upload-input",
            files=[FilePayload(name=name, mimeType="application/fits", buffer=path.read_bytes())],
        )
        await page.wait_for_function(
            "(n) => document.querySelectorAll('.choice[data-own=\"yes\"]').length === n",
            arg=n + 1,
            timeout=120000,
        )
    labels = await page.locator(".choice[data-own='yes'] .name").all_inner_texts()
    assert sorted(labels) == sorted(names)
    metas = await page.locator(".choice[data-own='yes'] .meta").all_inner_texts()
    assert all(any(o in m for m in metas) for o in objects), metas
    assert await page.evaluate("() => window.__xss") is None
    assert (
        await page.locator("#choices script, #choices img, #choices svg[onload], #display-caption *").count()
        == 0
    )
    assert (await page.locator("#display-caption").inner_text()).startswith(names[1])
    await aladin_pixels(page, "5-html-file-names")
    assert log.csp_violations() == [], log.csp_violations()
    await page.close()


async def test_refused_upload_shows_the_reason(browser: Browser, gateway: Gateway, tmp_path: Path) -> None:
    user = new_user()
    run = gateway.new_run(user)
    page, _ = await open_page(browser, gateway, user, new_ob(), run)
    far = write_image(tmp_path / "elsewhere.fits", ra=30.0, dec=-40.0)
    await page.set_input_files("#upload-input", str(far))
    await page.wait_for_selector("#status.error", timeout=60000)
    status = await page.inner_text("#status")
    assert "TARGET_OUTSIDE_FIELD" in status and "target" in status.lower()
    assert await page.is_checked("input[value='default']")
    await aladin_pixels(page, "6-refused")
    await page.close()


MARKERS = """() => Object.fromEntries(Object.entries(window.bgPage.markers).map(([key, c]) => [key, {
  name: c.name, shape: c.shape, color: c.color, labelled: c.displayLabel, column: c.labelColumn,
  sources: c.getSources().map((s) => [s.ra, s.dec, s.data[c.labelColumn]]),
}]))"""


async def assert_markers(page: Page) -> None:
    """Target and BOA star: two layers, drawn differently, each labelled with its name."""
    markers = await page.evaluate(MARKERS)
    target, boa = markers["target"], markers["boa"]
    assert (target["name"], boa["name"]) == ("target", "BOA star")
    assert target["shape"] != boa["shape"] and target["color"] != boa["color"]
    assert target["labelled"] and boa["labelled"]
    assert [s[2] for s in target["sources"]] == ["target"] and [s[2] for s in boa["sources"]] == ["BOA star"]
    assert target["sources"][0][:2] == pytest.approx(list(TARGET))
    assert boa["sources"][0][:2] == pytest.approx(list(BOA))
    assert await page.is_visible("#legend") and await page.is_visible("#legend-boa")
    assert "target" in await page.inner_text("#legend") and "BOA star" in await page.inner_text("#legend")


async def upload_file(page: Page, path: Path, name: str | None = None) -> None:
    """Chooses a file with the Upload button and waits for the answer."""
    payload = FilePayload(name=name or path.name, mimeType="application/fits", buffer=path.read_bytes())
    await page.evaluate("() => { window.__phases = []; }")
    await page.set_input_files("#upload-input", files=[payload])
    await page.wait_for_function(
        "() => window.__phases.length && window.__phases[window.__phases.length - 1] === ':Upload'",
        timeout=120000,
    )


async def test_first_view_says_what_to_do(browser: Browser, gateway: Gateway) -> None:
    user = new_user()
    page, _ = await new_page(browser, gateway, new_ob(), gateway.new_run(user))
    await page.screenshot(path=str(ARTIFACTS / "0-first-view-page.png"), full_page=True)
    hint = await page.inner_text("#first-hint")
    assert "Load" in hint and "upload" in hint
    assert await page.is_visible("#display-hint")
    assert await page.get_attribute("#upload-button", "aria-disabled") == "true"
    assert "Load an OB" in (await page.get_attribute("#upload-button", "title") or "")
    await page.fill("#ctx-token", gateway.token(user))
    await page.click("#ctx-load")
    await page.wait_for_function("() => document.body.dataset.display === 'default'", timeout=30000)
    assert await page.locator("#first-hint").count() == 0
    assert not await page.is_visible("#display-hint")
    assert await page.get_attribute("#upload-button", "aria-disabled") == "false"
    # The Upload button works from the keyboard too.
    async with page.expect_file_chooser(timeout=5000) as chooser:
        await page.focus("#upload-button")
        await page.keyboard.press("Enter")
    assert not (await chooser.value).is_multiple()
    await page.close()


async def test_a_link_with_a_token_loads_the_ob(browser: Browser, gateway: Gateway) -> None:
    # The sign-in's link (services/devrun.py page_link): the whole context in the fragment.
    user = new_user()
    run = gateway.new_run(user)
    ob = new_ob()
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    token = gateway.token(user)
    fragment = urlencode({"token": token, "ob": ob, "run": run, "ra": TARGET[0], "dec": TARGET[1]})
    await page.goto(f"{gateway.url}/#{fragment}")
    await page.wait_for_function("() => document.body.dataset.display === 'default'", timeout=30000)
    assert await page.is_checked("input[value='default']")
    assert "token" not in page.url, "the token stays in the address bar"
    assert f"ob={ob}" in page.url
    assert await page.input_value("#ctx-token") == token
    assert not await page.is_visible("#ctx-token"), "the context form stays open"
    assert await page.get_attribute("#sign-in", "href") == "/sign-in"
    await page.close()


async def test_bandpass_field_uploads_a_file_without_filter(
    browser: Browser, gateway: Gateway, tmp_path: Path
) -> None:
    user = new_user()
    run = gateway.new_run(user)
    page, _ = await open_page(browser, gateway, user, new_ob(), run)
    bare = field(tmp_path, "no filter.fits", filter_name=None)
    await upload_file(page, bare)
    status = await page.inner_text("#status.error")
    assert status.count("NO_FILTER") == 1, status
    assert await page.evaluate("() => document.activeElement.id") == "upload-bandpass"
    assert "wanted" in (await page.get_attribute("#upload-bandpass", "class") or "")
    assert await page.is_visible("#upload-retry")
    await aladin_pixels(page, "7-no-filter")

    await page.fill("#upload-bandpass", "Ks")
    await page.evaluate("() => { window.__phases = []; }")
    await page.click("#upload-retry")
    await page.wait_for_function(
        "() => (document.body.dataset.selected || '').startsWith('user_bkg_image|')", timeout=120000
    )
    row = page.locator(f".choice[data-fits-hash='{harness.sha256(bare)}']")
    assert await row.locator("input[type=radio]").is_checked()
    assert "filter Ks" in await row.locator(".meta").inner_text()
    assert "selected background" in await page.inner_text("#status")
    await page.close()


async def test_processing_shows_after_the_last_byte(
    browser: Browser, gateway: Gateway, tmp_path: Path
) -> None:
    user = new_user()
    page, _ = await open_page(browser, gateway, user, new_ob(), gateway.new_run(user))
    big = field(tmp_path, "big.fits", size=1024)
    payload = FilePayload(name=big.name, mimeType="application/fits", buffer=big.read_bytes())
    # Answers come late (as a 4096² image's would), long enough for a picture of the page meanwhile.
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    slow = {"offline": False, "latency": 3000, "downloadThroughput": -1, "uploadThroughput": -1}
    await cdp.send("Network.emulateNetworkConditions", slow)
    await page.set_input_files("#upload-input", files=[payload])
    # The page as it was when the last byte went (recorded by WATCH), and a picture of it.
    await page.wait_for_function(
        "() => window.__phases.length && document.body.dataset.upload !== 'sending'", timeout=60000
    )
    await page.screenshot(path=str(ARTIFACTS / "8-processing-page.png"), full_page=True)
    await cdp.send("Network.emulateNetworkConditions", {**slow, "latency": 0})
    await page.wait_for_function("() => document.body.dataset.upload === ''", timeout=120000)
    seen = await page.evaluate("() => window.__processing")
    assert seen is not None, "no processing state between the last byte and the answer"
    assert seen["text"] == "Processing…" and seen["spinner"] and seen["busy"] == "true", seen
    assert seen["indeterminate"] and "Checking big.fits" in seen["status"], seen
    phases = await page.evaluate("() => window.__phases")
    assert phases.index("processing:Processing…") > phases.index("sending:Uploading…"), phases
    await page.wait_for_selector(f".choice[data-fits-hash='{harness.sha256(big)}'] input:checked")
    assert not await page.is_visible("#upload-button .spinner")
    await page.close()


async def test_paw_print_is_shown_whole(browser: Browser, gateway: Gateway, tmp_path: Path) -> None:
    user = new_user()
    page, log = await open_page(browser, gateway, user, new_ob(), gateway.new_run(user))
    # Two chips with the target (and BOA star) on the eastern one.
    half = 256 * 0.36 / 3600 / 2
    shift = (half + 8 / 3600) / np.cos(np.deg2rad(TARGET[1]))
    paw = harness.paw_print(tmp_path, ra=TARGET[0] - shift, dec=TARGET[1])
    await upload_file(page, paw)
    await page.wait_for_function("() => document.body.dataset.display.startsWith('user_bkg_image|')")
    await settle(page, log)
    image = await page.evaluate("() => window.bgPage.listing.selected.image")
    corners = [c for fp in image["footprints"] for c in fp["corners"]]
    assert len(image["footprints"]) == 2 and len(corners) == 8
    width, height = await page.evaluate("() => window.bgPage.aladin.getSize()")
    pixels = await page.evaluate(
        "(cs) => cs.map(([ra, dec]) => window.bgPage.aladin.world2pix(ra, dec))", corners
    )
    assert all(p is not None and 0 <= p[0] <= width and 0 <= p[1] <= height for p in pixels), pixels
    xs = [p[0] for p in pixels]
    # Whole, and not lost in a wide view: the chips fill most of the view's width.
    assert max(xs) - min(xs) > 0.6 * width, (xs, width)
    view = await aladin_pixels(page, "9-paw-print")
    await assert_markers(page)
    # Both chips are drawn: image pixels left and right of the middle, the gap between.
    row = view[view.shape[0] // 2]
    left, right = int(min(xs)) + 10, int(max(xs)) - 10
    assert np.abs(row[left] - EMPTY).sum() > 12 and np.abs(row[right] - EMPTY).sum() > 12
    await page.close()


async def test_tiles_outside_the_image_are_not_asked_for_once_the_moc_is_in(
    browser: Browser, gateway: Gateway, tmp_path: Path
) -> None:
    # Aladin Lite reads the HiPS's Moc.fits by itself and asks only for tiles it covers. Only the
    # first tiles, asked for before the MOC is in, may find none (404): a race inside Aladin Lite.
    user = new_user()
    page, log = await open_page(browser, gateway, user, new_ob(), gateway.new_run(user))
    await upload_file(page, field(tmp_path, "moc.fits", size=512))
    await page.wait_for_function("() => document.body.dataset.display.startsWith('user_bkg_image|')")
    await settle(page, log)
    ours = [u for _, u in log.hips if "/api/v1/images/" in u]
    assert any(u.endswith("/Moc.fits") for u in ours), ours
    before = len(log.hips)
    for fov in (0.3, 1.0, 3.0):  # out past the image, where lower orders hold it and its neighbours
        await page.evaluate("(f) => window.bgPage.aladin.setFoV(f)", fov)
        await settle(page, log, 1.0)
    await page.evaluate("() => window.bgPage.aladin.gotoRaDec(150.2, 2.2)")
    await settle(page, log, 1.0)
    later = [(s, u) for s, u in log.hips[before:] if "/api/v1/images/" in u]
    assert later, "no tile asked for while zooming out"
    assert [(s, u) for s, u in later if s != 200] == []
    await page.close()


async def test_refusal_tells_each_finding_once(browser: Browser, gateway: Gateway, tmp_path: Path) -> None:
    user = new_user()
    page, _ = await open_page(browser, gateway, user, new_ob(), gateway.new_run(user))
    await upload_file(page, harness.no_wcs(tmp_path))
    status = await page.inner_text("#status.error")
    assert status.count("INVALID_WCS") == 1 and status.count("HDU 0") == 1, status
    assert "HDU 0: HDU 0" not in status
    findings = await page.locator("#status .finding").all_inner_texts()
    assert findings and len(findings) == len(set(findings)), findings
    await page.locator("#selector").screenshot(path=str(ARTIFACTS / "10-invalid-wcs-selector.png"))
    await upload_file(page, field(tmp_path, "bare.fits", filter_name=None))
    status = await page.inner_text("#status.error")
    assert status.count("NO_FILTER") == 1, status
    findings = await page.locator("#status .finding").all_inner_texts()
    assert len(findings) == 1 and status.count(findings[0]) == 1, status
    await aladin_pixels(page, "10-refused-once")
    await page.close()


async def test_long_file_names_stay_on_one_line(browser: Browser, gateway: Gateway, tmp_path: Path) -> None:
    user = new_user()
    page, _ = await open_page(browser, gateway, user, new_ob(), gateway.new_run(user))
    names = [
        "ADP.2024-03-14T05:12:44.123_HAWKI_Ks_pawprint_reduced_stacked_astrometry_calibrated.fits",
        "x" * 120 + ".fits",
    ]
    for n, name in enumerate(names):
        await upload_file(page, field(tmp_path, f"long{n}.fits"), name=name)
    await page.wait_for_function("() => document.querySelectorAll('.choice[data-own=\"yes\"]').length === 2")
    boxes = await page.evaluate(
        """() => [...document.querySelectorAll(
          '.choice[data-own="yes"] .name, #display-caption')].map((e) => ({
          text: e.textContent, title: e.title, scroll: e.scrollWidth, client: e.clientWidth,
          height: e.getBoundingClientRect().height, line: parseFloat(getComputedStyle(e).lineHeight)
            || 1.3 * parseFloat(getComputedStyle(e).fontSize),
        }))"""
    )
    assert {b["text"] for b in boxes[:2]} == set(names)
    for box in boxes:
        assert box["title"] == box["text"], box
        assert box["scroll"] > box["client"], f"not cut: {box}"
        assert box["height"] < 1.5 * box["line"], f"wraps: {box}"
    await aladin_pixels(page, "11-long-names")
    await page.close()


async def test_the_gaia_image_is_listed_made_and_shown(browser: Browser, gateway: Gateway) -> None:
    user = new_user()
    run = gateway.new_run(user)
    ob = new_ob()
    page, log = await open_page(browser, gateway, user, ob, run)
    row = page.locator(".choice[data-selection='gaia']")
    assert (await row.locator(".name").inner_text()).startswith("Gaia DR3 (epoch ")
    assert "made when chosen" in await row.inner_text()
    assert await row.get_attribute("data-available") == "yes"

    await page.check("input[value='gaia']")
    await page.wait_for_function("() => document.body.dataset.display === 'gaia'", timeout=90000)
    listing = await _listing(gateway, user, ob, run)
    fits_hash = listing["gaia"]["image"]["fits_hash"]
    assert listing["selected"]["kind"] == "gaia"
    assert await row.get_attribute("data-fits-hash") == fits_hash
    assert await row.locator("input").is_checked()
    assert (await page.inner_text("#display-caption")).startswith("Gaia DR3 (epoch ")

    # Aladin Lite drew the Gaia image's own HiPS: its stars on a dark sky.
    await settle(page, log)
    view = await aladin_pixels(page, "12-gaia-image")
    ours = [(s, u) for s, u in log.hips if f"/images/{fits_hash}/hips/" in u]
    assert any(u.endswith("/properties") and s == 200 for s, u in ours), ours
    tiles = [s for s, u in ours if re.search(r"/Norder\d+/Dir\d+/Npix\d+\.(png|fits)$", u)]
    assert tiles.count(200) >= 1 and set(tiles) <= {200, 404}, tiles
    middle = centre(view, 0.6)
    assert (middle.min(axis=2) > 200).sum() > 10, "no stars drawn"
    assert np.median(middle) < 100, "not a dark sky with stars"
    await assert_markers(page)
    assert log.errors == [], log.errors
    await page.close()


async def test_an_archive_image_is_fetched_and_shown(browser: Browser, gateway: Gateway) -> None:
    user = new_user()
    run = gateway.new_run(user)
    ob = new_ob()
    dp_id = "ADP.2015-05-11T10:19:53.607"  # the development archive's FORS2 image of this field
    page, log = await open_page(browser, gateway, user, ob, run)
    row = page.locator(f".choice[data-dp-id='{dp_id}']")
    text = await row.inner_text()
    assert dp_id in text and "FORS2" in text and "filter R" in text
    assert await row.get_attribute("data-state") in ("available", "ready")

    await page.check(f"input[value='eso_im|{dp_id}']")
    await page.wait_for_function(
        "(s) => document.body.dataset.display === s", arg=f"eso_im|{dp_id}", timeout=90000
    )
    listing = await _listing(gateway, user, ob, run)
    fits_hash = listing["archive"]["images"][0]["image"]["fits_hash"]
    assert listing["selected"]["selection"] == f"eso_im|{dp_id}"
    assert await row.get_attribute("data-state") == "ready"
    assert await page.inner_text("#display-caption") == f"{dp_id}.fits (filter R)"

    await settle(page, log)
    view = await aladin_pixels(page, "13-archive-image")
    ours = [(s, u) for s, u in log.hips if f"/images/{fits_hash}/hips/" in u]
    assert any(u.endswith("/properties") and s == 200 for s, u in ours), ours
    tiles = [s for s, u in ours if re.search(r"/Norder\d+/Dir\d+/Npix\d+\.(png|fits)$", u)]
    assert tiles.count(200) >= 1 and set(tiles) <= {200, 404}, tiles
    middle = centre(view)
    assert middle.std() > 8, "the image area is flat: no image drawn"
    assert log.errors == [], log.errors
    await page.close()


async def test_generate_finding_chart_shows_the_set(browser: Browser, gateway: Gateway) -> None:
    user = new_user()
    run = gateway.new_run(user)
    ob = new_ob()
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    log = PageLog(page)
    names = {
        "prog_id": "60.A-9252(A)",
        "pi": "Alice Smith",
        "ob_name": "OB <b>1</b>",
        "target_name": "$x$ Cen",
    }
    fragment = urlencode(
        {"ob": ob, "run": run, "ra": TARGET[0], "dec": TARGET[1], "instrument": "FORS2", **names}
    )
    await page.goto(f"{gateway.url}/#{fragment}")
    await page.wait_for_function("() => document.body.dataset.ready === 'yes'")
    await page.fill("#ctx-token", gateway.token(user))
    await page.click("#ctx-load")
    await page.wait_for_function("() => document.body.dataset.display === 'default'", timeout=30000)
    await page.click("#fc-button")
    await page.wait_for_function("() => /^[0-9]+$/.test(document.body.dataset.charts || '')", timeout=120000)
    assert await page.evaluate("() => document.body.dataset.charts") == "2"
    images = page.locator("#charts-list img")
    assert [await images.nth(n).get_attribute("data-kind") for n in range(2)] == ["default", "gaia"]
    # Each JPEG decoded and laid out by the browser.
    widths = await page.evaluate(
        "() => [...document.querySelectorAll('#charts-list img')].map(i => i.naturalWidth)"
    )
    assert widths == [800, 800]
    captions = await page.locator("#charts-list figcaption").all_inner_texts()
    assert captions[0].startswith("1. DEMO-R") and captions[1].startswith("2. Gaia DR3 (epoch ")
    await page.locator("#charts").screenshot(path=str(ARTIFACTS / "14-finding-charts.png"))
    assert log.errors == [] and log.csp_violations() == [], (log.errors, log.csp_violations())
    await page.close()


async def _listing(gateway: Gateway, user: str, ob: int, run: str) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        return await gateway.listing(http, ob, run, TARGET, user)


async def _body_bytes(gateway: Gateway, *routes: str) -> float:
    """What the gateway has read of request bodies on these routes (its Prometheus counter)."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for route in routes:
        pattern = r'^bgimages_gateway_request_body_bytes_total\{route="' + re.escape(route) + r'"\} (\S+)$'
        m = re.search(pattern, text, re.M)
        total += float(m.group(1)) if m else 0.0
    return total


# Where a file's bytes go: the one-shot upload, and the resumable upload's PATCHes (the page's).
UPLOAD_ROUTES = ("/api/v1/obs/{ob_id}/background-images", "/api/v1/uploads/{upload_id}")
CHECK_ROUTE = "/api/v1/obs/{ob_id}/background-images/check"


def big_sparse_image(path: Path, ra: float, dec: float, side: int = 8700) -> Path:
    """A float32 side x side image (300 MB at 8700) whose data is a hole of the file system."""
    header = streamed_tan_header(side, ra, dec)
    with path.open("wb") as f:
        f.write(header)
        f.truncate(len(header) + -(-side * side * 4 // 2880) * 2880)
    return path


async def test_a_big_file_is_refused_before_a_byte_of_its_data_goes(
    browser: Browser, suite: Suite, tmp_path: Path
) -> None:
    """300 MB, target outside: the page reads its headers, the gateway says why at once (the
    suite of default settings: uploads up to 4 GB)."""
    gateway = Gateway(suite)
    user = new_user()
    page, _ = await open_page(browser, gateway, user, new_ob(), gateway.new_run(user))
    far = big_sparse_image(tmp_path / "far away.fits", ra=30.0, dec=-40.0)
    assert far.stat().st_size > 300e6
    sent, checked = await _body_bytes(gateway, *UPLOAD_ROUTES), await _body_bytes(gateway, CHECK_ROUTE)
    await page.evaluate("() => { window.__phases = []; }")
    started = asyncio.get_running_loop().time()
    await page.set_input_files("#upload-input", str(far))  # a path: the browser reads the file itself
    await page.wait_for_selector("#status.error", timeout=60000)
    took = asyncio.get_running_loop().time() - started
    status = await page.inner_text("#status")
    assert "TARGET_OUTSIDE_FIELD" in status and "nothing was uploaded" in status, status
    await page.screenshot(path=str(ARTIFACTS / "11-checked-first-page.png"), full_page=True)
    assert await _body_bytes(gateway, *UPLOAD_ROUTES) == sent, "the gateway received the file's data"
    assert 0 < await _body_bytes(gateway, CHECK_ROUTE) - checked < 16 << 10
    phases = await page.evaluate("() => window.__phases")
    assert "checking:Checking…" in phases and not any(p.startswith("sending") for p in phases), phases
    assert took < 20, f"{took:.1f} s from the choice to the answer"

    # A paw-print with the target in the gap between its chips: the gap's code, nothing sent.
    await upload_file(page, harness.paw_print(tmp_path))
    status = await page.inner_text("#status.error")
    assert "TARGET_IN_CHIP_GAP" in status and "nothing was uploaded" in status, status
    assert await _body_bytes(gateway, *UPLOAD_ROUTES) == sent

    # A good file: checked, then uploaded as before.
    good = field(tmp_path, "good.fits")
    await upload_file(page, good)
    await page.wait_for_selector(f".choice[data-fits-hash='{harness.sha256(good)}'] input:checked")
    phases = await page.evaluate("() => window.__phases")
    assert phases.index("checking:Checking…") < phases.index("sending:Uploading…"), phases
    assert await _body_bytes(gateway, *UPLOAD_ROUTES) >= sent + good.stat().st_size
    await page.close()


async def test_a_dropped_connection_and_a_reload_resume_the_upload(
    browser: Browser, suite: Suite, tmp_path: Path
) -> None:
    """200 MB through a link that drops at 60 %: the page resumes by itself; dropped again and
    the page reloaded, choosing the same file resumes it from where it stood."""
    gateway = Gateway(suite)
    user = new_user()
    run = gateway.new_run(user)
    path = harness.big_file(tmp_path, 200)
    size = path.stat().st_size
    patched = "/api/v1/uploads/{upload_id}"
    before = await _body_bytes(gateway, patched)
    async with harness.CuttingProxy(gateway.url, int(size * 0.6)) as proxy:
        page, _ = await open_page(browser, Gateway(suite, url=proxy.url), user, new_ob(), run)
        await page.evaluate("() => { window.__phases = []; }")
        await page.set_input_files("#upload-input", str(path))
        await page.wait_for_selector(
            f".choice[data-fits-hash='{harness.sha256(path)}'] input:checked", timeout=180000
        )
        phases = await page.evaluate("() => window.__phases")
        await page.close()
    assert proxy.cut and "resuming:Resuming…" in phases, phases
    sent = await _body_bytes(gateway, patched) - before
    assert size <= sent < 1.3 * size, f"{sent / size:.2f} times the file went up: it started again"

    # Dropped, and stays down; the page is gone (reloaded: a new page on the same storage, the
    # old one closed before the link is back); then the same file is chosen again.
    other = harness.big_file(tmp_path, 200, "other.fits")
    ob = new_ob()
    before = await _body_bytes(gateway, patched)
    try:
        async with harness.CuttingProxy(gateway.url, int(size * 0.6), stay_down=True) as proxy:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            fragment = f"ob={ob}&run={run}&ra={TARGET[0]}&dec={TARGET[1]}&boa_ra={BOA[0]}&boa_dec={BOA[1]}"

            async def loaded() -> Page:
                one = await context.new_page()
                await one.add_init_script(WATCH)
                await one.goto(f"{proxy.url}/#{fragment}")
                await one.wait_for_function("() => document.body.dataset.ready === 'yes'")
                await one.fill("#ctx-token", gateway.token(user))
                await one.click("#ctx-load")
                await one.wait_for_function(
                    "() => document.body.dataset.display === 'default'", timeout=30000
                )
                return one

            page = await loaded()
            await page.set_input_files("#upload-input", str(other))
            await page.wait_for_function("() => document.body.dataset.upload === 'resuming'", timeout=120000)
            await page.close()
            proxy.down = False
            again = await loaded()
            await again.set_input_files("#upload-input", str(other))
            await again.wait_for_function(
                "() => document.getElementById('status').textContent.includes('Resuming the upload')",
                timeout=30000,
            )
            await again.screenshot(path=str(ARTIFACTS / "12-resuming-page.png"), full_page=True)
            await again.wait_for_selector(
                f".choice[data-fits-hash='{harness.sha256(other)}'] input:checked", timeout=180000
            )
            await context.close()
    finally:
        await gateway.forget_uploads(user)
    sent = await _body_bytes(gateway, patched) - before
    assert size <= sent < 1.3 * size, f"{sent / size:.2f} times the file went up: it started again"
