"""The paper channel over HTTP in the real app: ``/api/paper/form``, ``/api/paper/scans`` and the console's
form button and review queue (log-in, authority scope, CSRF, escaping, the images)."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import paper_support as P
import pytest
from aiohttp import FormData
from console_support import (
    KREIS,
    SOEST,
    hub_engine,
    login,
    make_app,
    make_case,
    new_user,
    set_case,
    settings_for,
)
from pypdf import PdfReader
from sqlalchemy import select

from channels.paper import store
from channels.paper.code import decode
from channels.paper.outbound import LetterAdapter
from channels.paper.settings import PaperSettings
from hub.http.tokens import add_token
from hub.queue.cases import audit_t, message_t
from hub.queue.outbox import PickupAdapter

SERVICE = "sh-wohnsitz-anmelden"
AMT = ("amt-010605005", "Amt Bad Bramstedt-Land")


@pytest.fixture
async def env(tmp_path, demo_db_url, kb, aiohttp_client):
    P.require_paper_tools(fonts=True)
    engine, url = hub_engine(tmp_path, demo_db_url)
    settings = settings_for(tmp_path, url)
    settings.paper = PaperSettings(hmac_key=P.KEY, print_dir=str(tmp_path / "print"), pdf_dpi=200)
    adapters = {"api": PickupAdapter(), "web": PickupAdapter(), "paper": LetterAdapter(settings.paper, engine)}
    app, service = make_app(settings, engine, kb, adapters=adapters)
    client = await aiohttp_client(app)
    new_user(engine, "meier", authorities=[AMT[0]])
    new_user(engine, "schulz", authorities=[SOEST[0]])
    new_user(engine, "chefin", role="supervisor", authorities=[KREIS[0]])
    case = make_case(engine, text="Bitte schicken Sie mir das Formular.", channel="phone", phone="+4945511234",
                     authority=AMT, service=(SERVICE, "Anmeldung einer Wohnung"))
    set_case(engine, case, contact_name="Hans Müller", contact_address="Hauptstraße 1\n24576 Hitzhusen",
             location="Hitzhusen")
    return SimpleNamespace(client=client, engine=engine, case=case, agent=add_token(engine, "t-agent", "agent", authorities=[AMT[0]]),
                           foreign=add_token(engine, "t-foreign", "agent", authorities=[SOEST[0]]),
                           service=add_token(engine, "t-scan", "service"), settings=settings, kb=kb)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(*files: tuple[str, bytes]) -> FormData:
    form = FormData()
    for name, data in files:
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return form


async def api_form(env, **params) -> tuple[int, bytes | dict]:
    resp = await env.client.get("/api/paper/form", params=params, headers=bearer(env.agent))
    body = await resp.read()
    return resp.status, body if resp.content_type == "application/pdf" else await resp.json()


async def test_the_form_api_needs_an_agent_token(env):
    params = {"service": SERVICE, "location": "Hitzhusen"}
    assert (await env.client.get("/api/paper/form", params=params)).status == 401
    assert (await env.client.get("/api/paper/form", params=params, headers=bearer(env.service))).status == 403
    status, pdf = await api_form(env, **params)
    assert status == 200 and pdf.startswith(b"%PDF")
    code = decode(PdfReader(io.BytesIO(pdf)).get_fields()["formcode"]["/V"], [P.KEY.encode()])
    assert code.authority_id == AMT[0] and code.case_token is None


async def test_the_form_api_for_a_case(env):
    status, pdf = await api_form(env, service=SERVICE, case=str(env.case))
    assert status == 200
    fields = PdfReader(io.BytesIO(pdf)).get_fields()
    assert decode(fields["formcode"]["/V"], [P.KEY.encode()]).case_id == env.case
    assert fields["name"]["/V"] == "Hans Müller"


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"service": "nope", "location": "Hitzhusen"}, 404, "Keine Leistung mit der Kennung 'nope'"),
    ({"location": "Hitzhusen"}, 400, "Leistung"),
    ({"service": SERVICE}, 400, "Ort gebraucht"),
    ({"service": SERVICE, "case": "987654"}, 404, "Fall 987654 nicht gefunden"),
    ({"service": SERVICE, "case": "abc"}, 404, "Fall nicht gefunden"),
])
async def test_the_form_api_says_what_is_wrong(env, params, status, words):
    got, body = await api_form(env, **params)
    assert got == status and words in body["error"]


async def test_scans_come_in_over_the_api(env):
    _status, pdf = await api_form(env, service=SERVICE, case=str(env.case))
    scan = P.scanned(P.write_in_box(P.rasterise(pdf, 200), 200, P.CONCERN), 2.0)
    resp = await env.client.post("/api/paper/scans", data=upload(("scan.jpg", scan)), headers=bearer(env.service))
    assert resp.status == 201, await resp.text()
    (page,) = (await resp.json())["pages"]
    assert page["status"] == "accepted" and page["case_id"] == env.case and page["authority_name"] == AMT[1]
    again = await env.client.post("/api/paper/scans", data=upload(("scan.jpg", scan)), headers=bearer(env.service))
    assert again.status == 200 and (await again.json())["pages"][0]["duplicate"] is True
    with env.engine.connect() as conn:
        raw = conn.execute(select(message_t.c.raw_ref).where(message_t.c.case_id == env.case,
                                                             message_t.c.channel == "paper")).scalar_one()
    assert raw.startswith("paper-scan:")  # the upload itself is kept (by its hash)


async def test_the_scan_api_refuses_what_it_cannot_take(env):
    post = env.client.post
    assert (await post("/api/paper/scans", data=upload(("a.jpg", b"x")))).status == 401
    assert (await post("/api/paper/scans", data=upload(("a.jpg", b"x")), headers=bearer(env.agent))).status == 403
    resp = await post("/api/paper/scans", json={"file": "x"}, headers=bearer(env.service))
    assert resp.status == 415
    form = FormData()
    form.add_field("note", "no file here", content_type="text/plain")  # multipart, but no file part
    resp = await post("/api/paper/scans", data=form, headers=bearer(env.service))
    assert resp.status == 400 and "keine Datei" in (await resp.json())["error"]
    env.settings.paper = PaperSettings(hmac_key=P.KEY, max_file_bytes=4096)
    resp = await post("/api/paper/scans", data=upload(("gross.pdf", b"%PDF-" + b"0" * 10_000)),
                      headers=bearer(env.service))
    assert resp.status == 413
    resp = await post("/api/paper/scans", data=upload(("kaputt.pdf", b"%PDF-1.4 garbage")), headers=bearer(env.service))
    assert resp.status == 200 and (await resp.json())["pages"][0]["status"] == "rejected"


# -- the console ------------------------------------------------------------------------------------------


async def test_the_answer_card_sends_the_form_by_post(env):
    await login(env.client, "meier")
    page = await (await env.client.get("/console/", params={"q": "Wohnsitz anmelden", "place": "Hitzhusen",
                                                             "service": SERVICE})).text()
    link = re.search(r'id="paper-form-link" href="([^"]+)"', page)
    assert link, "the answer card has the form button"
    resp = await env.client.get(link.group(1).replace("&amp;", "&"))
    assert resp.status == 200 and resp.content_type == "application/pdf"
    case_page = await (await env.client.get(f"/console/cases/{env.case}")).text()
    link = re.search(r'id="paper-form-link" href="([^"]+)"', case_page)
    resp = await env.client.get(link.group(1).replace("&amp;", "&"))
    fields = PdfReader(io.BytesIO(await resp.read())).get_fields()
    assert fields["name"]["/V"] == "Hans Müller"


async def test_the_console_form_keeps_to_the_agents_cases(env):
    await login(env.client, "schulz")  # Kreis Soest: not this case's authority
    resp = await env.client.get("/console/paper/form", params={"service": SERVICE, "case": str(env.case)})
    assert resp.status == 404


async def test_the_form_api_keeps_to_the_tokens_cases(env):
    """An agent token of another authority gets no form pre-filled with this citizen's data."""
    params = {"service": SERVICE, "case": str(env.case)}
    resp = await env.client.get("/api/paper/form", params=params, headers=bearer(env.foreign))
    assert resp.status == 404
    assert "Hans" not in await resp.text()
    assert (await env.client.get("/api/paper/form", params=params, headers=bearer(env.agent))).status == 200


async def _ingest(env, *files: tuple[str, bytes]) -> list[dict]:
    resp = await env.client.post("/api/paper/scans", data=upload(*files), headers=bearer(env.service))
    return (await resp.json())["pages"]


async def test_the_review_queue_shows_images_and_lets_an_agent_correct(env):
    _status, pdf = await api_form(env, service=SERVICE, case=str(env.case))
    hand = P.write_in_box(P.rasterise(pdf, 200), 200, P.CONCERN, font=P.CURSIVE_HAND, size_mm=6.0)
    pages = await _ingest(env, ("hand.jpg", P.scanned(hand, 1.0)), ("<i>fremd<i>.png", P.scanned(
        P.rasterise(P.make_form(key=P.OTHER_KEY).pdf, 150), 0.0)))
    assert [p["status"] for p in pages] == ["accepted", "rejected"]
    with env.engine.connect() as conn:
        rows = {r["status"]: r for r in store.review_queue(conn)}
    assert rows["accepted"]["needs_review"], "cursive handwriting is read with low confidence"
    accepted, rejected = rows["accepted"]["id"], rows["rejected"]["id"]

    await login(env.client, "meier")
    listing = await (await env.client.get("/console/paper/review")).text()
    assert f'data-page-id="{accepted}"' in listing
    assert f'data-page-id="{rejected}"' not in listing  # rejected pages: supervisors only
    item = await (await env.client.get(f"/console/paper/review/{accepted}")).text()
    assert f'src="/console/paper/review/{accepted}/box.jpg"' in item and "bitte prüfen" in item
    for which in ("box", "page"):
        img = await env.client.get(f"/console/paper/review/{accepted}/{which}.jpg")
        assert img.status == 200 and img.content_type == "image/jpeg"
        assert img.headers["Cache-Control"] == "no-store"
    assert (await env.client.get(f"/console/paper/review/{rejected}")).status == 404

    token = re.search(r'name="csrf-token" content="([^"]+)"', item).group(1)
    url = f"/console/paper/review/{accepted}"
    assert (await env.client.post(url, data={"action": "correct", "text": "x"}, allow_redirects=False)).status == 403
    resp = await env.client.post(url, data={"action": "correct", "text": P.CONCERN, "csrf_token": token},
                                 allow_redirects=False)
    assert resp.status == 303
    with env.engine.connect() as conn:
        text = conn.execute(select(message_t.c.text).where(message_t.c.case_id == env.case,
                                                           message_t.c.channel == "paper")).scalar_one()
        trail = conn.execute(select(audit_t.c.action, audit_t.c.reason).where(audit_t.c.case_id == env.case)).all()
        row = store.get(conn, accepted)
    assert text == P.CONCERN and row["review_action"] == "corrected" and row["reviewed_by"] == "meier"
    corrected = [reason for action, reason in trail if action == "paper_text_corrected"]
    assert corrected and "Hitzhusen" not in corrected[0]  # the audit log never holds the citizen's words

    env.client.session.cookie_jar.clear()
    await login(env.client, "chefin")
    rejected_page = await (await env.client.get(f"/console/paper/review/{rejected}")).text()
    # The client sends the name percent-encoded; either way it arrives as plain, sanitised text, never markup.
    assert "fremd" in rejected_page and "<i>" not in rejected_page
    assert "forged" in rejected_page
    other = await env.client.get(f"/console/paper/review/{accepted}")
    assert other.status == 404  # the supervisor of the Kreis does not see the Amt's case
