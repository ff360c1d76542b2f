"""Issue 15.3 in the console: an automatic answer (out-of-office) is visibly marked, not shown as the
citizen's message, and changes nothing on the case (also when the hub waits for the citizen)."""

from __future__ import annotations

from console_support import KREIS, hub_engine, login, make_app, make_case, new_user, settings_for
from sqlalchemy import select

from hub.queue.cases import CaseState, case_t, message_t
from hub.queue.intake import write_requests
from hub.queue.requests import Contact, InboundRequest


async def test_an_out_of_office_is_marked_in_the_case_page_and_the_case_keeps_waiting(
        tmp_path, demo_db_url, kb, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)
    app, _service = make_app(settings_for(tmp_path, url), engine, kb)
    client = await aiohttp_client(app)
    case_id = make_case(engine, text="Reisepass", authority=KREIS, email="petra@example.org",
                        channel="email", external_id="<p1@example.org>", state=CaseState.WAITING_FOR_CITIZEN)
    with engine.connect() as conn:
        before = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
    notice = InboundRequest(channel="email", external_id="<oof-1@example.org>", in_reply_to=["<p1@example.org>"],
                            text="Ich bin bis 14. Juni nicht im Haus. <script>x()</script>",
                            subject="Automatische Antwort: Reisepass", contact=Contact(email="petra@example.org"),
                            auto_reply="auto-submitted: auto-replied")
    (result,) = write_requests(engine, [notice])
    assert result.case_id == case_id and result.joined and result.state == "waiting_for_citizen"
    with engine.connect() as conn:
        after = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
        kinds = list(conn.execute(select(message_t.c.kind).where(message_t.c.case_id == case_id)
                                  .order_by(message_t.c.id)).scalars())
    assert after["state"] == "waiting_for_citizen" and after["sla_paused_since"] == before["sla_paused_since"]
    assert after["last_inbound_at"] == before["last_inbound_at"]
    assert kinds == ["request", "auto_reply"]

    new_user(engine, "meier", "agent", authorities=[KREIS[0]])
    await login(client, "meier")
    html = await (await client.get(f"/console/cases/{case_id}")).text()
    assert 'class="msg in auto-reply"' in html and "<strong>Automatische Antwort</strong>" in html
    assert html.count("Bürger →") == 1 and "Automatisch →" in html
    assert "<script>x()</script>" not in html
    data = await (await client.get(f"/console/api/cases/{case_id}")).json()
    assert [m["kind"] for m in data["messages"]] == ["request", "auto_reply"]
    engine.dispose()


def test_an_automatic_answer_with_no_open_case_is_not_stored(tmp_path):
    from queue_support import sqlite_engine

    engine = sqlite_engine(tmp_path)
    notice = InboundRequest(channel="email", external_id="<oof-2@example.org>", in_reply_to=["<unknown@x>"],
                            text="Abwesend", contact=Contact(email="a@example.org"), auto_reply="vacation subject")
    (result,) = write_requests(engine, [notice, notice])[:1]
    assert result.dropped and not result.created
    with engine.connect() as conn:
        assert conn.execute(select(case_t)).first() is None and conn.execute(select(message_t)).first() is None
    engine.dispose()
