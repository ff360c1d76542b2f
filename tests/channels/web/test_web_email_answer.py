"""A web-form citizen who chooses "Per E-Mail" (issue 15.2): the confirmation mail and the agent's answer
leave by e-mail through the outbox, to a real aiosmtpd relay; RFC 3834-safe; limited against backscatter."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from web_support import cases, make_app, open_form, post_form, settings_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "email"))
from test_email_outbound import Sink, start_relay  # noqa: E402  (the relay of the e-mail channel's tests)

from channels.email.outbound import build_email_adapter  # noqa: E402
from hub import casework  # noqa: E402
from hub.http.tokens import add_token  # noqa: E402
from hub.queue.cases import message_t  # noqa: E402
from hub.queue.outbox import PickupAdapter  # noqa: E402

OURS = "anliegen@buergerservice.example.de"
PUBLIC = "https://buergerservice.example.de"


@dataclass
class _Web:
    public_base_url: str


class _WithWeb:
    """The [email] and [web] sections as the hub's Settings carry them."""

    def __init__(self, email, public_base_url: str) -> None:
        self.email, self.web = email, _Web(public_base_url)


@pytest.fixture()
async def relay():
    r = await start_relay(Sink())
    yield r
    await r.close()


@pytest.fixture()
def build(aiohttp_client, hub, kb, tmp_path, relay):
    engine, url = hub

    async def build(**email):
        settings = settings_for(tmp_path, url, write_burst=100, read_burst=100)
        settings.email.address = OURS
        settings.email.smtp_host, settings.email.smtp_port = "127.0.0.1", relay.port
        for key, value in email.items():
            setattr(settings.email, key, value)
        settings.queue.message_id_domain = "buergerservice.example.de"
        app, service = make_app(settings, engine, kb)
        # The status page's public address ([web] public_base_url; the test client speaks plain HTTP to
        # 127.0.0.1, where a https base would make the form's cookie Secure): what build_email_adapter reads.
        adapter = build_email_adapter(_WithWeb(settings.email, PUBLIC))
        service.dispatcher.adapters.update(email=adapter, web=PickupAdapter())
        client = await aiohttp_client(app)
        client.engine, client.service = engine, service
        return client

    return build


async def _submit(client, *, reply: str, email: str = "Erika@Example.org", text: str = "Wie melde ich mein Auto um?"):
    fields = await open_form(client)
    fields.update(text=text, location="Norderstedt", name="Erika Mustermann", email=email, phone="", reply=reply,
                  action="submit")
    resp = await post_form(client, fields)
    assert resp.status == 200, await resp.text()
    return resp


def _messages(engine, case_id: int) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(message_t).where(message_t.c.case_id == case_id)
                                              .order_by(message_t.c.id)).mappings()]


async def test_per_email_gets_a_confirmation_and_the_answer_by_email_with_the_status_link(build, relay):
    client = await build()
    await _submit(client, reply="email", text="Wie melde ich mein Auto um? <b>dringend</b>")
    (case,) = cases(client.engine)
    assert case["channel"] == "web" and case["reply_channel"] == "email"
    await client.service.dispatcher.run_until_empty()

    (confirmation,) = relay.sink.received
    mail = confirmation.message
    assert confirmation.rcpts == ["erika@example.org"]
    assert confirmation.mail_from == "<>", "automatic mail: the null envelope sender (RFC 3834 section 3.3)"
    assert mail["Auto-Submitted"] == "auto-generated" and mail["X-Auto-Response-Suppress"] == "All"
    assert mail["Subject"] == f"Eingangsbestätigung [#{case['token']}]"
    assert mail["Message-ID"].endswith("@buergerservice.example.de>")
    body = mail.get_content()
    assert f"http://127.0.0.1:{client.port}/status/{case['token']}" in body  # the form's own public address
    assert "Auto um" not in body and "dringend" not in body and "Erika" not in body, "nothing typed is echoed"

    # The agent answers in the console or the API: one rule (answer_route) sends it by e-mail.
    result = await asyncio.to_thread(
        casework.run, client.engine, case["id"], casework.reply, text="Bitte kommen Sie mit dem Fahrzeugschein.",
        agent="anna", policy=client.service.policy, queue=client.service.queue, sendable={"email", "web"})
    assert result["state"] == "answered"
    answer_row = next(m for m in _messages(client.engine, case["id"]) if m["kind"] == "reply")
    assert (answer_row["channel"], answer_row["recipient"]) == ("email", "erika@example.org")
    await client.service.dispatcher.run_until_empty()
    answer = relay.sink.received[1]
    assert answer.rcpts == ["erika@example.org"] and answer.mail_from == OURS
    assert answer.message["Auto-Submitted"] is None and f"[#{case['token']}]" in answer.message["Subject"]
    text = answer.message.get_content()
    assert text.startswith("Bitte kommen Sie mit dem Fahrzeugschein.")
    assert f"{PUBLIC}/status/{case['token']}" in text
    (stored,) = [m for m in _messages(client.engine, case["id"]) if m["kind"] == "reply"]
    assert stored["send_state"] == "sent"


async def test_the_api_answers_a_web_case_by_the_chosen_channel_too(build, relay):
    client = await build()
    await _submit(client, reply="email")
    (case,) = cases(client.engine)
    token = add_token(client.engine, "fachverfahren", "agent", all_authorities=True)
    resp = await client.post(f"/api/cases/{case['id']}/reply", json={"text": "Die Ummeldung kostet 27 €."},
                             headers={"Authorization": f"Bearer {token}"})
    assert resp.status in (200, 201), await resp.text()
    (reply,) = [m for m in _messages(client.engine, case["id"]) if m["kind"] == "reply"]
    assert (reply["channel"], reply["recipient"]) == ("email", "erika@example.org")


async def test_the_web_answer_stays_on_the_status_page_when_the_citizen_chose_it(build, relay):
    client = await build()
    await _submit(client, reply="web")
    (case,) = cases(client.engine)
    assert case["reply_channel"] is None
    await asyncio.to_thread(
        casework.run, client.engine, case["id"], casework.reply, text="Antwort", agent="anna",
        policy=client.service.policy, queue=client.service.queue)
    await client.service.dispatcher.run_until_empty()
    assert relay.sink.received == []  # no confirmation, no mail
    (reply,) = [m for m in _messages(client.engine, case["id"]) if m["kind"] == "reply"]
    assert (reply["channel"], reply["recipient"], reply["send_state"]) == ("web", None, "sent")


async def test_confirmations_are_limited_per_address_and_globally_but_every_request_is_stored(build, relay):
    """Anyone can type a stranger's address into the form: the hub must not become a mail cannon."""
    client = await build(ack_rate_limit=1, ack_global_limit=2)
    await _submit(client, reply="email", email="opfer@example.org", text="Erste Anfrage")
    await _submit(client, reply="email", email="opfer@example.org", text="Zweite Anfrage")  # per address: no
    await _submit(client, reply="email", email="zwei@example.org", text="Dritte Anfrage")
    await _submit(client, reply="email", email="drei@example.org", text="Vierte Anfrage")  # global: no
    await client.service.dispatcher.run_until_empty()
    assert sorted(r.rcpts[0] for r in relay.sink.received) == ["opfer@example.org", "zwei@example.org"]
    assert len(cases(client.engine)) == 4
    assert all(c["reply_channel"] == "email" for c in cases(client.engine))
