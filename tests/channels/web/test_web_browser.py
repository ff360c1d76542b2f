"""The citizen form in headless Chromium (Debian's chromium + Python Playwright), against a real server on
127.0.0.1: type, see suggestions, pick a place, submit, open the status page; the same without JavaScript;
labels, focus order, contrast and no CSP violations. Screenshots go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from web_support import (
    ARTIFACTS,
    MARKUP,
    hub_engine,
    launch_chromium,
    make_app,
    png,
    serve_on_loopback,
    service_with_markup,
    settings_for,
)

from hub.queue.cases import attachment_t, case_t

# Contrast of a text element against the first opaque background behind it (WCAG 2.1 relative luminance).
CONTRAST_JS = """
(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  let bg = null;
  for (let n = el; n; n = n.parentElement) {
    const c = rgb(getComputedStyle(n).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) { bg = c.slice(0, 3); break; }
  }
  bg = bg || [255, 255, 255];
  const fg = rgb(getComputedStyle(el).color).slice(0, 3);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}
"""

UNLABELLED_JS = """
() => [...document.querySelectorAll('input, textarea, select')]
  .filter((e) => e.type !== 'hidden' && !e.closest('[aria-hidden="true"]'))
  .filter((e) => e.labels.length === 0 && !e.getAttribute('aria-label'))
  .map((e) => e.name || e.id)
"""


@pytest.fixture()
async def server(tmp_path, demo_db_url, kb):
    """The hub with the web channel on a real TCP port of 127.0.0.1."""
    engine, url = hub_engine(tmp_path, demo_db_url)
    app, _service = make_app(settings_for(tmp_path, url), engine, kb)
    try:
        async with serve_on_loopback(app) as base:
            yield base, engine
    finally:
        engine.dispose()


@pytest.fixture()
async def browser():
    async with launch_chromium() as b:
        yield b


def watch_console(page) -> list[str]:
    """Console errors and uncaught exceptions of the page (a CSP violation is a console error)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return problems


def case_tokens(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(case_t.c.token)).scalars())


async def test_type_see_suggestions_submit_and_open_the_status_page(browser, server, kb):
    base, engine = server
    page = await browser.new_page(viewport={"width": 1000, "height": 1400})
    problems = watch_console(page)
    await page.goto(base + "/")
    assert await page.get_attribute("html", "lang") == "de"
    await page.screenshot(path=str(ARTIFACTS / "web-01-form.png"), full_page=True)

    # Accessible: every field labelled, readable contrast, a visible focus, a sensible tab order.
    assert await page.evaluate(UNLABELLED_JS) == []
    for selector in (
        "p.lead",
        "p.hint",
        "label[for=text]",
        "#submit-button",
        "#suggest-button",
        ".lang-switch a",
        ".site-footer p",
    ):
        ratio = await page.evaluate(CONTRAST_JS, selector)
        assert ratio is not None and ratio >= 4.5, (selector, ratio)
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip-link"
    await page.focus("#text")
    order = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate("document.activeElement.id"))
        if order[-1] == "submit-button":
            break
    assert order == [
        "location",
        "suggest-button",
        "name",
        "email",
        "phone",
        "reply-web",
        "attachments",
        "submit-button",
    ], order
    assert await page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"

    # Typing shows matching services with the office in charge, and places while the name is incomplete.
    await page.click("#text")
    await page.keyboard.type("Ich möchte ein Wunschkennzeichen", delay=15)
    await page.click("#location")
    await page.keyboard.type("Norderst", delay=30)
    place = page.locator("#suggestions .place-list button", has_text="Norderstedt (Kreis Segeberg)")
    await place.wait_for(timeout=10_000)
    assert await page.locator("#place-options option").count() >= 1
    await place.click()  # fills the field; does not send the form
    assert await page.input_value("#location") in ("22846 Norderstedt", "Norderstedt (Kreis Segeberg)")
    service = page.locator("#suggestions .service", has_text="Wunschkennzeichen reservieren")
    await service.wait_for(timeout=10_000)
    assert "Kreis Segeberg – Kreisverwaltung" in await service.inner_text()
    assert "Hamburger Straße 30" in await service.inner_text()
    assert (await page.inner_text("#suggest-status")).endswith("passende Leistungen gefunden.")  # aria-live
    assert case_tokens(engine) == []

    await page.screenshot(path=str(ARTIFACTS / "web-02-suggestions.png"), full_page=True)

    # Markup in a catalogue text or typed into a field stays text when the script shows suggestions.
    with service_with_markup(kb):
        await page.fill("#text", "")
        await page.click("#text")
        await page.keyboard.type(f"Zauberstab {MARKUP}", delay=5)
        shown = page.locator("#suggestions .service h3", has_text="Zauberstab")
        await shown.wait_for(timeout=10_000)
        assert await shown.inner_text() == f"Zauberstab {MARKUP} beantragen"
        assert await page.locator("#suggestions img").count() == 0
        assert await page.evaluate("window.__xss") is None
    await page.fill("#text", "Ich möchte ein Wunschkennzeichen")

    await page.check("#reply-email")
    await page.fill("#email", "erika@example.org")
    await page.set_input_files(
        "#attachments", files=[{"name": "foto.png", "mimeType": "image/png", "buffer": png()}]
    )
    await page.click("#submit-button")
    token = (await page.locator("#case-token").inner_text()).strip()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}", token)
    assert case_tokens(engine) == [token]
    with engine.connect() as conn:
        assert conn.execute(select(attachment_t.c.filename)).scalar_one() == "foto.png"
    await page.screenshot(path=str(ARTIFACTS / "web-03-done.png"), full_page=True)
    for selector in (".panel-confirm h1", ".panel-confirm p", "#case-token", "#status-link", ".status-url code"):
        ratio = await page.evaluate(CONTRAST_JS, selector)
        assert ratio is not None and ratio >= 4.5, (selector, ratio)

    await page.click("#status-link")
    assert page.url == f"{base}/status/{token}"
    assert await page.locator("#case-state").inner_text() == "Eingegangen"
    await page.screenshot(path=str(ARTIFACTS / "web-04-status.png"), full_page=True)
    assert await page.evaluate(UNLABELLED_JS) == []
    for selector in (".summary dt", "#case-state", "#no-answer", "#reply-text-hint", "label[for=reply-text]"):
        ratio = await page.evaluate(CONTRAST_JS, selector)
        assert ratio is not None and ratio >= 4.5, (selector, ratio)
    await page.click(".lang-switch a")
    assert await page.get_attribute("html", "lang") == "en"
    assert await page.locator("#case-state").inner_text() == "Received"
    await page.screenshot(path=str(ARTIFACTS / "web-05-status-en.png"), full_page=True)
    assert problems == []


async def test_the_form_works_without_javascript(browser, server):
    base, engine = server
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(base + "/?lang=en")
    await page.fill("#text", "I need a new passport")
    await page.fill("#location", "Norderst")
    await page.click("#suggest-button")  # the server answers with the suggestions
    await page.click("#suggestions .place-list button >> text=Norderstedt (Kreis Segeberg)")
    service = page.locator("#suggestions .service", has_text="Reisepass beantragen")
    await service.wait_for()
    assert "Stadt Norderstedt – Rathaus" in await service.inner_text()
    assert await page.input_value("#text") == "I need a new passport"
    await page.screenshot(path=str(ARTIFACTS / "web-06-nojs-suggestions.png"), full_page=True)

    await page.click("#submit-button")
    token = (await page.locator("#case-token").inner_text()).strip()
    assert case_tokens(engine) == [token]
    await page.click("#status-link")
    assert await page.locator("#case-state").inner_text() == "Received"

    # A missing text is reported at the top, linked to the field, and the rest of the input is kept.
    await page.goto(base + "/")
    await page.fill("#location", "Kiel")
    await page.click("#submit-button")
    summary = page.locator("#error-summary")
    assert await summary.is_visible()
    assert await page.evaluate("document.activeElement.id") == "error-summary"  # read out first
    assert await summary.locator("a[href='#text']").count() == 1
    assert await page.get_attribute("#text", "aria-invalid") == "true"
    for selector in ("#error-summary a", ".field-error", "#error-summary-title"):
        ratio = await page.evaluate(CONTRAST_JS, selector)
        assert ratio is not None and ratio >= 4.5, (selector, ratio)
    assert await page.input_value("#location") == "Kiel"
    await page.screenshot(path=str(ARTIFACTS / "web-07-nojs-errors.png"), full_page=True)
    await context.close()
