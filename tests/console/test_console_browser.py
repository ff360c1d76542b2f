"""The console in a real browser: Debian's Chromium driven by Playwright against a real hub server on
127.0.0.1, with a local SMTP sink (aiosmtpd) behind the e-mail channel.

Skipped with the reason when Chromium or Playwright is missing, except on CI (``CI=true``), where it
fails. Screenshots go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import require_component
from console_support import (
    KREIS,
    PASSWORD,
    SmtpSink,
    hub_engine,
    make_app,
    make_case,
    new_user,
    settings_for,
)
from sqlalchemy import select

from hub.console.calls import call_t
from hub.queue.cases import CaseState, case_t, message_t

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _playwright_missing() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (.venv/bin/pip install playwright)"
    return None


class HubServer:
    """The hub (queue, console, outbox with the real e-mail adapter) on 127.0.0.1, in its own thread."""

    def __init__(self, settings, engine, kb) -> None:
        self.settings, self.engine, self.kb = settings, engine, kb
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hub-server", daemon=True)

    def _run(self) -> None:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            # The real app; e-mail goes through the real SMTP adapter to the sink (make_app's default).
            app, self.service = make_app(self.settings, self.engine, self.kb)

            async def outbox(app):  # only the outbox: tests route their cases themselves
                task = asyncio.create_task(self.service.dispatcher.run_forever())
                yield
                self.service.dispatcher.stop()
                await asyncio.wait_for(task, 10)

            app.cleanup_ctx.append(outbox)
            self.runner = web.AppRunner(app)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def start(self) -> HubServer:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, demo_db_url, kb):
    require_component(_playwright_missing() is None, _playwright_missing() or "")
    tmp = tmp_path_factory.mktemp("browser")
    engine, url = hub_engine(tmp, demo_db_url)
    sink = SmtpSink()
    sink.controller.start()
    settings = settings_for(tmp, url, smtp_port=sink.port, events_poll_seconds=0.2)
    new_user(engine, "meier", authorities=[KREIS[0]])
    new_user(engine, "chefin", "supervisor", regions=["01060"])
    server = HubServer(settings, engine, kb).start()
    try:
        yield type("Hub", (), {"url": server.url, "engine": engine, "sink": sink, "server": server})
    finally:
        server.stop()
        sink.controller.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def browser(hub):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, hub, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="de-DE",
                                  timezone_id="Europe/Berlin")
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    context.close()


def _login(page, hub, name: str = "meier") -> None:
    page.goto(hub.url + "/console/")
    assert "/console/login" in page.url
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(hub.url + "/console/")


def _search(page, place: str, words: str) -> None:
    page.fill("#place", place)
    page.click("#q")
    page.keyboard.type(words, delay=40)
    page.wait_for_function(
        "() => { const t = document.querySelector('#timing'); return t && t.dataset.ms && "
        "document.querySelectorAll('#results li[role=option]').length > 0 && "
        "document.querySelector('#place-status').textContent.trim().length > 0; }")


def test_login_and_search_with_a_typo(page, hub):
    _login(page, hub)
    page.screenshot(path=str(ARTIFACTS / "console-after-login.png"))
    _search(page, "Todesfelde", "Führerschien")
    assert "Todesfelde" in page.text_content("#place-status")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    page.wait_for_selector("#card .authority-name")
    assert "Kreis Segeberg" in page.text_content("#card .authority-name")
    assert page.text_content("#card h2") and page.locator("#card .docs li").count() >= 2
    assert page.get_attribute("#card .badge", "data-open") in ("yes", "no")
    page.screenshot(path=str(ARTIFACTS / "console-card-fuehrerschein-todesfelde.png"), full_page=True)
    durations = page.evaluate(
        "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/console/api/lookup'))"
        ".map(e => e.duration)")
    assert durations, "the search asked the server as the agent typed"
    durations.sort()
    assert durations[len(durations) // 2] <= 50, durations
    assert not page.errors, page.errors


def test_record_a_call_and_forward_it(page, hub):
    _login(page, hub)
    page.fill("#wait", "18")
    page.click("#btn-start")
    page.wait_for_selector("#call-active:not([hidden])")
    call_id = int(page.text_content("#call-id"))
    _search(page, "Todesfelde", "Reisepass")
    page.keyboard.press("Enter")
    page.wait_for_selector("#card .authority-name")
    assert "Amt Leezen" in page.text_content("#card .authority-name")
    # The place stays set for the whole call: a new search, even a reload, keeps it (and the call).
    page.reload()
    page.wait_for_selector("#call-active:not([hidden])")
    assert page.input_value("#place") == "Todesfelde" and int(page.text_content("#call-id")) == call_id
    assert "Todesfelde" in page.text_content("#place-status")
    # "Send to caller": the card by e-mail, through the outbox and the real SMTP adapter.
    page.fill("#q", "")
    page.click("#q")
    page.keyboard.type("Reisepas", delay=30)
    page.wait_for_function("() => document.querySelectorAll('#results li[role=option]').length > 0")
    page.keyboard.press("Enter")
    page.wait_for_selector("#card .authority-name")
    page.click("#send-box summary")
    page.select_option("#call-send select[name=channel]", "email")
    page.fill("#call-send input[name=to]", "Anrufer@Example.org")
    page.click("#btn-send")
    page.wait_for_function("() => document.querySelector('#call-result').textContent.includes('Postausgang')")
    card_mail = hub.sink.wait_for("anrufer@example.org")
    assert "Reisepass" in card_mail["Subject"] and "Amt Leezen" in card_mail.get_content()
    assert page.input_value("#place") == "Todesfelde", "sending the card does not end the call"
    page.fill("#q", "")
    page.click("#q")
    page.keyboard.type("Führerschien", delay=30)
    page.wait_for_function("() => [...document.querySelectorAll('#results li[role=option]')]"
                           ".some(li => li.textContent.includes('Fahrerlaubnis'))")
    page.keyboard.press("Enter")
    page.wait_for_selector("#card .authority-name")
    assert "Kreis Segeberg" in page.text_content("#card .authority-name")
    page.click("#forward-box summary")
    page.fill("#note", "Anruferin fragt nach der Sehtestbescheinigung für die Fahrerlaubnis.")
    page.fill("#caller-phone", "04551 98765")
    page.screenshot(path=str(ARTIFACTS / "console-call-forward-form.png"), full_page=True)
    page.click("#btn-forward")
    page.wait_for_function("() => document.querySelector('#call-result').textContent.includes('Weitergeleitet')")
    assert "Kreis Segeberg" in page.text_content("#call-result")
    assert page.input_value("#place") == "", "the place is cleared when the call ends"
    with hub.engine.connect() as conn:
        call = conn.execute(select(call_t).where(call_t.c.id == call_id)).mappings().one()
        case = conn.execute(select(case_t).where(case_t.c.id == call["case_id"])).mappings().one()
    assert call["outcome"] == "forwarded" and call["answered_within_s"] == 18
    assert case["state"] == CaseState.FORWARDED and case["forward_due"] is not None
    mail = hub.sink.wait_for("kreisverwaltung@segeberg.example")
    assert case["token"] in mail["Subject"]
    assert "Sehtestbescheinigung" in mail.get_content()


def test_answer_an_email_case_and_find_the_mail_in_the_smtp_sink(page, hub):
    case_id = make_case(hub.engine, text="Guten Tag, wie lange dauert ein Reisepass?", channel="email",
                        authority=KREIS, email="buergerin@example.org", external_id="<q1@example.org>")
    _login(page, hub)
    page.goto(hub.url + "/console/queue")
    page.click(f'tr[data-case-id="{case_id}"] a')
    page.wait_for_url(f"{hub.url}/console/cases/{case_id}")
    assert "wie lange dauert ein Reisepass" in page.text_content("#thread")
    page.fill("#reply-text", "Guten Tag, ein Reisepass dauert etwa vier bis sechs Wochen.")
    page.click("#btn-reply")
    page.wait_for_url(f"{hub.url}/console/cases/{case_id}?done=reply")
    mail = hub.sink.wait_for("buergerin@example.org")
    with hub.engine.connect() as conn:
        token = conn.execute(select(case_t.c.token).where(case_t.c.id == case_id)).scalar()
    assert f"[#{token}]" in mail["Subject"]
    assert mail["In-Reply-To"] == "<q1@example.org>"
    assert "vier bis sechs Wochen" in mail.get_content()
    # The mail went through the hub's real SMTP adapter, not a recording stand-in.
    from channels.email.outbound import EmailAdapter

    assert isinstance(hub.server.service.dispatcher.adapters["email"], EmailAdapter)
    page.reload()
    page.screenshot(path=str(ARTIFACTS / "console-email-case-answered.png"), full_page=True)
    assert "beantwortet" in page.text_content("#case-state")


def test_the_queue_updates_without_reloading(page, hub):
    _login(page, hub)
    page.goto(hub.url + "/console/queue")
    page.wait_for_function("() => document.querySelector('#live').classList.contains('on')")
    case_id = make_case(hub.engine, text="Neue Anfrage per Web", authority=KREIS, email="neu@example.org")
    page.wait_for_selector(f'#queue-body tr[data-case-id="{case_id}"]')
    page.screenshot(path=str(ARTIFACTS / "console-queue-live.png"), full_page=True)


def test_supervisor_dashboard(page, hub):
    from datetime import UTC, datetime

    from sqlalchemy import insert

    with hub.engine.begin() as conn:
        conn.execute(insert(call_t).values(agent="meier", started_at=datetime.now(UTC), ended_at=datetime.now(UTC),
                                           answered_within_s=12, outcome="first_contact", authority_id=KREIS[0],
                                           authority_name=KREIS[1]))
    _login(page, hub, "chefin")
    page.click("text=Dashboard")
    page.wait_for_url(hub.url + "/console/dashboard")
    assert page.locator(".charts svg").count() == 4
    assert "Ziel 65 %" in page.text_content(".charts")
    assert page.text_content("#kpi-first-contact .big").strip().endswith("%")
    assert page.text_content("#kpi-service-level .big").strip().endswith("%")
    page.screenshot(path=str(ARTIFACTS / "console-dashboard.png"), full_page=True)
    assert not page.errors, page.errors


XSS = '<script>alert("xss-script")</script><img src=x onerror="alert(\'xss-img\')"> Mein Antrag'


def test_stored_script_and_img_onerror_stay_inert(page, hub):
    case_id = make_case(hub.engine, text=XSS, channel="email", authority=KREIS, email="eve@example.org",
                        external_id="<xss@example.org>")
    _login(page, hub)
    page.goto(hub.url + "/console/queue")
    page.goto(f"{hub.url}/console/cases/{case_id}")
    page.wait_for_selector("#thread .msg .text")
    page.wait_for_timeout(500)

    def check() -> None:
        assert page.dialogs == [], f"a dialog fired: {page.dialogs}"
        assert page.locator("#thread script").count() == 0
        assert page.locator("#thread img").count() == 0
        assert page.evaluate("() => document.querySelectorAll('img[src=x], [onerror]').length") == 0
        assert '<img src=x onerror="alert' in page.text_content("#thread .msg.in .text")

    check()
    # A live update re-draws the thread with the page's script (textContent): still inert.
    before = page.get_attribute("#thread", "data-refreshed")
    with hub.engine.begin() as conn:
        row = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
        from hub.queue.cases import SlaPolicy, transition

        transition(conn, row, CaseState.NEEDS_CLARIFICATION, actor="test", policy=SlaPolicy())
    page.wait_for_function(f"() => document.querySelector('#thread').dataset.refreshed !== {before!r}"
                           if before else "() => !!document.querySelector('#thread').dataset.refreshed")
    page.wait_for_timeout(300)
    check()
    page.screenshot(path=str(ARTIFACTS / "console-xss-inert.png"), full_page=True)
    with hub.engine.connect() as conn:
        assert conn.execute(select(message_t.c.text).where(message_t.c.case_id == case_id)).scalar() == XSS


def test_artifacts_directory_is_git_ignored():
    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    import subprocess

    result = subprocess.run(["git", "check-ignore", "-q", "tests/artifacts/x.png"], cwd=root)
    assert result.returncode == 0


# -- issue 15: the card follows the highlight, pickers, text blocks, find a caller -------------------------------


def _card_title(page) -> str:
    return (page.text_content("#card h2") or "").strip()


def test_the_card_follows_the_highlighted_hit_without_enter(page, hub):
    _login(page, hub)
    _search(page, "Todesfelde", "Reisepass")
    names = [n.strip() for n in page.locator("#results li[role=option] .name").all_text_contents()]
    assert len(names) >= 3, names
    # No Enter: the first hit's card is there as soon as the hits are.
    page.wait_for_function("(n) => document.querySelector('#card h2') && "
                           "document.querySelector('#card h2').textContent.trim() === n", arg=names[0])
    page.keyboard.press("ArrowDown")
    page.wait_for_function("(n) => document.querySelector('#card h2').textContent.trim() === n", arg=names[1])
    assert page.get_attribute("#opt-1", "aria-selected") == "true"
    page.hover("#opt-2")
    page.wait_for_function("(n) => document.querySelector('#card h2').textContent.trim() === n", arg=names[2])
    assert "Amt Leezen" in page.text_content("#card .authority-name")
    # A card chosen in the address (?service=, the no-JS link of a hit) stays chosen when the script runs.
    chosen = page.get_attribute("#opt-2", "data-service-id")
    page.goto(f"{hub.url}/console/?q=Reisepass&place=Todesfelde&service={chosen}")
    page.wait_for_function("() => document.querySelector('#timing').dataset.ms")
    page.wait_for_timeout(200)
    assert _card_title(page) == names[2] and page.get_attribute("#opt-2", "aria-selected") == "true"
    assert not page.errors, page.errors


def test_forward_by_picking_the_office_from_the_autocomplete(page, hub):
    case_id = make_case(hub.engine, text="Ich brauche einen Reisepass für meine Reise.", channel="email",
                        authority=KREIS, email="reisende@example.org", external_id="<pass@example.org>")
    with hub.engine.begin() as conn:
        from sqlalchemy import update

        conn.execute(update(case_t).where(case_t.c.id == case_id).values(location="Todesfelde"))
    _login(page, hub, "chefin")
    page.goto(f"{hub.url}/console/cases/{case_id}")
    page.click("#forward summary")
    assert page.is_hidden("#forward .picker-go"), "with JavaScript the picker searches as you type"
    page.click("#fwd-office-q")
    page.keyboard.type("leez", delay=40)
    # The list the page came with (the case's office first) is replaced by the hits for the typed words.
    page.wait_for_function("() => { const o = document.querySelectorAll('#fwd-office-list li[role=option]'); "
                           "return o.length === 1 && o[0].textContent.includes('Amt Leezen'); }")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")  # keeps the choice, does not load the page
    assert page.is_checked("#fwd-office-list input[value='amt-010605053']")
    assert page.url.endswith(f"/console/cases/{case_id}")
    page.fill("#fwd-note", "Bitte den Antrag auf einen Reisepass übernehmen.")
    page.screenshot(path=str(ARTIFACTS / "console-forward-picker.png"), full_page=True)
    page.click("#btn-forward")
    page.wait_for_url(f"{hub.url}/console/cases/{case_id}?done=forward")
    with hub.engine.connect() as conn:
        case = conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one()
    assert case["state"] == CaseState.FORWARDED and case["authority_id"] == "amt-010605053"
    leezen = hub.server.kb.authorities["amt-010605053"]
    mail = hub.sink.wait_for(leezen.email)
    assert "Reisepass übernehmen" in mail.get_content()
    assert not page.errors, page.errors


def test_insert_a_text_block_and_the_card_into_the_answer_and_send_it(page, hub):
    case_id = make_case(hub.engine, text="Was brauche ich für einen Reisepass?", channel="email", authority=KREIS,
                        service=("sh-reisepass", "Reisepass beantragen"), email="fragende@example.org",
                        external_id="<frage-pass@example.org>")
    _login(page, hub)
    page.goto(f"{hub.url}/console/cases/{case_id}")
    page.fill("#reply-text", "Guten Tag,")
    page.select_option("#reply-template", label="Termin vereinbaren")
    page.click("#btn-template")
    page.click("#btn-card")
    text = page.input_value("#reply-text")
    assert text.startswith("Guten Tag,\nBitte vereinbaren Sie für Reisepass beantragen einen Termin")
    assert "Mitbringen:" in text and "Zuständig: Kreis Segeberg" in text and "Öffnungszeiten:" in text
    assert page.url.endswith(f"/console/cases/{case_id}"), "inserting does not reload the page"
    page.screenshot(path=str(ARTIFACTS / "console-answer-with-card.png"), full_page=True)
    page.click("#btn-reply")
    page.wait_for_url(f"{hub.url}/console/cases/{case_id}?done=reply")
    mail = hub.sink.wait_for("fragende@example.org")
    body = mail.get_content()
    assert "Bitte vereinbaren Sie" in body and "Mitbringen:" in body and "Zuständig: Kreis Segeberg" in body
    assert not page.errors, page.errors


def test_find_a_caller_from_the_header_box(page, hub):
    first = make_case(hub.engine, text="Erste Frage am Telefon", channel="sms", authority=KREIS,
                      phone="+4945519876543", state=CaseState.CLOSED)  # closed: the next SMS is a new case
    second = make_case(hub.engine, text="<b>Zweite</b> Frage", channel="sms", authority=KREIS,
                       phone="+4945519876543")
    _login(page, hub)
    page.fill("#find-form input[name=q]", "(04551) 987-6543")
    page.click("#find-form button")
    page.wait_for_url("**/console/find?q=*")
    rows = page.locator("#find-matches tr[data-case-id]")
    assert [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.caseId)")] == [second, first]
    assert "<b>Zweite</b> Frage" in page.text_content("#find-matches")
    assert page.locator("#find-matches b").count() == 0
