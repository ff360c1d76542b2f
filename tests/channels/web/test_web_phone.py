"""The citizen pages on a 390-px-wide phone (iPhone 12-15 width) in headless Chromium: no horizontal scroll on
the form, the confirmation and the status page; the footer links Impressum, Datenschutz and Barrierefreiheit
from the config; the status page names the service, the office and the answer's due time."""

from __future__ import annotations

import asyncio

import pytest
from web_support import ARTIFACTS, hub_engine, launch_chromium, make_app, serve_on_loopback, settings_for

PHONE = {"width": 390, "height": 844}
LEGAL = {"imprint_url": "https://www.kreis-segeberg.example/impressum", "privacy_url": "/datenschutz",
         "accessibility_url": "https://www.kreis-segeberg.example/barrierefreiheit"}

# Everything that sticks out on the right: the page's scroll width and every element's right edge.
OVERFLOW_JS = """
() => {
  const w = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > w + 0.5)
    .filter((e) => !e.closest('.skip-link, .visually-hidden, .hp'))
    .map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''));
  return {scroll: document.documentElement.scrollWidth, width: w, wide: wide.slice(0, 10)};
}
"""


@pytest.fixture()
async def server(tmp_path, demo_db_url, kb):
    engine, url = hub_engine(tmp_path, demo_db_url)
    app, service = make_app(settings_for(tmp_path, url, **LEGAL), engine, kb)
    try:
        async with serve_on_loopback(app) as base:
            yield base, engine, service
    finally:
        engine.dispose()


async def assert_fits(page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"web-phone-{name}.png"), full_page=True)
    fit = await page.evaluate(OVERFLOW_JS)
    assert fit["width"] == PHONE["width"]
    assert fit["scroll"] <= fit["width"], f"{name}: horizontal scroll ({fit})"
    assert not fit["wide"], f"{name}: wider than the phone: {fit['wide']}"


async def assert_legal_links(page) -> None:
    for text, url in (("Impressum", LEGAL["imprint_url"]), ("Datenschutz", "/datenschutz"),
                      ("Barrierefreiheit", LEGAL["accessibility_url"])):
        link = page.locator("footer a", has_text=text)
        assert await link.count() == 1, text
        assert await link.get_attribute("href") == url


async def test_the_form_the_confirmation_and_the_status_page_fit_a_phone(server):
    base, engine, service = server
    async with launch_chromium() as browser:
        context = await browser.new_context(viewport=PHONE, device_scale_factor=3, is_mobile=True, has_touch=True,
                                            locale="de-DE")
        page = await context.new_page()
        await page.goto(base + "/")
        await assert_fits(page, "1-form")
        await assert_legal_links(page)
        await page.fill("#text", "Ich möchte einen Reisepass beantragen, meiner läuft bald ab. "
                                 "Donaudampfschifffahrtsgesellschaftskapitänsmütze" * 2)
        await page.fill("#location", "Norderstedt")
        await page.check("#reply-web")
        await page.click("#submit-button")
        await page.wait_for_selector("#case-token")
        await assert_fits(page, "2-done")
        await assert_legal_links(page)
        token = (await page.inner_text("#case-token")).strip()
        await asyncio.to_thread(service.routing.run_until_empty)
        await page.goto(f"{base}/status/{token}")
        await assert_fits(page, "3-status")
        await assert_legal_links(page)
        assert "Reisepass" in await page.inner_text("#status-service")
        assert (await page.inner_text("#status-office")).strip()
        assert "Uhr" in await page.inner_text("#status-due")
        # the reference typed as read out on the phone: lower case, without hyphens
        await page.goto(base + "/")
        await page.fill("#status-token", token.replace("-", " ").lower())
        await page.click("#status-token-submit")
        assert page.url == f"{base}/status/{token}"
        await context.close()
