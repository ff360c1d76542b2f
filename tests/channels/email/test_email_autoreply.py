"""Automatic answers, list mail and our own mail (issue 15.3), replayed through the real SMTP listener.

The recorded out-of-office notices are what Exchange/Outlook, Outlook.com, Gmail, Thunderbird (a
vacation filter), Dovecot's Sieve vacation and a web hoster's autoresponder send. Each answers one of
our mails to a citizen whose case is answered: it must be recorded as an automatic answer, leave the
case answered, and the agent's next answer must not thread onto it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from queue_support import sqlite_engine
from sqlalchemy import update
from test_email_inbound import fixture, send, simple_mail, start_hub
from test_email_outbound import Sink, _Cfg, settings, start_relay

from channels.email.outbound import build_email_adapter
from hub import casework
from hub.queue.cases import SlaPolicy, audit_t, case_t, message_t
from hub.queue.outbox import Dispatcher
from hub.queue.settings import QueueSettings

#: fixture, the out-of-office's sender (our citizen), the case token and the Message-ID of our mail it answers
OUT_OF_OFFICE = [
    ("exchange_out_of_office.eml", "petra.schulz@outlook.de", "Xk3mP9qR2sT5vW8y",
     "<Xk3mP9qR2sT5vW8y.0a1b2c3d4e5f6789@citizen-hub>"),
    ("gmail_vacation_responder.eml", "jonas.becker@gmail.com", "Gm4vAc8tN2pQ7rS1",
     "<Gm4vAc8tN2pQ7rS1.3c9d2e1f0a7b6c5d@buergerservice.example.de>"),
    ("outlook_com_automatic_reply_en.eml", "emily.carter@outlook.com", "Ol5cMr2tE9wQ4yU7",
     "<Ol5cMr2tE9wQ4yU7.8e7d6c5b4a392817@buergerservice.example.de>"),
    ("thunderbird_vacation_filter.eml", "h.krueger@posteo.de", "Tb8fVa3cL6nP1xZ4",
     "<Tb8fVa3cL6nP1xZ4.1a2b3c4d5e6f7081@buergerservice.example.de>"),
    ("sieve_vacation_dovecot.eml", "r.lange@mailbox.org", "Sv2dVc7aT5mK9qW3",
     "<Sv2dVc7aT5mK9qW3.6d5c4b3a29180716@buergerservice.example.de>"),
    ("autoresponder_x_autorespond.eml", "info@baeckerei-hansen.de", "Ar6sPn1dX8bH3jF5",
     "<Ar6sPn1dX8bH3jF5.0f1e2d3c4b5a6978@buergerservice.example.de>"),
]


@pytest.fixture
def engine(tmp_path):
    engine = sqlite_engine(tmp_path)
    yield engine
    engine.dispose()


def _reply(engine, case_id: int, text: str) -> dict:
    return casework.run(engine, case_id, casework.reply, text=text, agent="anna", policy=SlaPolicy(),
                        queue=QueueSettings())


@pytest.mark.parametrize(("name", "citizen", "token", "our_id"), OUT_OF_OFFICE, ids=[o[0] for o in OUT_OF_OFFICE])
async def test_an_out_of_office_leaves_the_answered_case_alone_and_is_never_the_reply_target(
        engine, tmp_path, name, citizen, token, our_id):
    hub = await start_hub(engine, tmp_path)
    relay = await start_relay(Sink())
    try:
        dispatcher = Dispatcher(engine, {"email": build_email_adapter(_Cfg(settings(relay.port)))}, QueueSettings())
        first = simple_mail("Reisepass", "Wie beantrage ich einen Reisepass?", sender=citizen,
                            msgid="<erste-mail@example.org>")
        assert (await send(hub.port, first, mail_from=citizen))[0] == 250
        (case,) = hub.rows(case_t)
        with engine.begin() as conn:  # the case and our answer as the recorded notice knows them
            conn.execute(update(case_t).where(case_t.c.id == case["id"]).values(token=token))
        answer = _reply(engine, case["id"], "Den Reisepass beantragen Sie im Bürgerbüro.")
        with engine.begin() as conn:
            conn.execute(update(message_t).where(message_t.c.id == answer["message_id"]).values(external_id=our_id))
        await asyncio.to_thread(hub.acks.flush)
        await dispatcher.run_until_empty()
        (before,) = hub.rows(case_t)
        assert before["state"] == "answered"
        trail = len(hub.rows(audit_t))

        code, text, _ = await send(hub.port, fixture(name), mail_from=citizen)
        assert code == 250 and "stored as message" in text, text
        (after,) = hub.rows(case_t)
        assert after["state"] == "answered", "an out-of-office must not reopen the case"
        assert after["last_inbound_at"] == before["last_inbound_at"] and after["state_changed_at"] == \
            before["state_changed_at"]
        assert len(hub.rows(audit_t)) == trail, "nothing happened to the case"
        notice = hub.inbound()[-1]
        assert notice["case_id"] == case["id"] and notice["kind"] == "auto_reply"
        assert notice["author"].startswith("auto-reply: ")
        assert len(hub.acks_sent()) == 1, "only the citizen's first mail was acknowledged, not the notice"

        # The agent answers again: the mail threads onto the citizen's own mail, never onto the notice.
        _reply(engine, case["id"], "Nachtrag: Bitte bringen Sie ein biometrisches Foto mit.")
        sent_before = len(relay.sink.received)
        await dispatcher.run_until_empty()
        (mail,) = [r.message for r in relay.sink.received[sent_before:]]
        notice_id = notice["external_id"]
        assert notice_id not in (mail["In-Reply-To"] or "") and notice_id not in (mail["References"] or "")
        assert mail["In-Reply-To"] == "<erste-mail@example.org>"
    finally:
        await relay.close()
        await hub.stop()


async def test_an_out_of_office_with_no_open_case_opens_none_and_is_not_kept(engine, tmp_path):
    hub = await start_hub(engine, tmp_path)
    try:
        code, text, _ = await send(hub.port, fixture("gmail_vacation_responder.eml"), mail_from="jonas.becker@gmail.com")
        assert code == 250 and "not taken as a request" in text
        assert hub.rows(case_t) == [] and hub.inbound() == [] and hub.acks_sent() == []
        assert not any(p.is_file() for p in Path(hub.settings.raw_mail_dir).rglob("*")), "the original is deleted"
    finally:
        await hub.stop()


async def test_newsletters_and_our_own_mail_open_no_case_and_get_250(engine, tmp_path):
    hub = await start_hub(engine, tmp_path)
    try:
        code, text, _ = await send(hub.port, fixture("newsletter_list_bulk.eml"), mail_from="bounce@mcdlv.net")
        assert code == 250 and "not taken as a request (list or newsletter mail" in text
        list_mail = simple_mail("Protokoll der Sitzung", "Anbei das Protokoll.", sender="verein@example.org",
                                headers={"List-Id": "Buergerverein <verein.lists.example.org>"})
        assert "not taken" in (await send(hub.port, list_mail))[1]
        own = simple_mail("Ihr Anliegen", "Schleife", sender=hub.settings.address)
        code, text, _ = await send(hub.port, own)
        assert code == 250 and "hub's own address" in text
        # Our own address as envelope sender only (a bounce of a forward coming home) is the same loop.
        other = simple_mail("Hallo", "Text", sender="someone@example.org")
        assert "hub's own address" in (await send(hub.port, other, mail_from=hub.settings.address))[1]
        assert hub.rows(case_t) == [] and hub.acks_sent() == []
    finally:
        await hub.stop()


async def test_a_machine_notice_that_answers_nothing_still_opens_a_case_without_acknowledgement(engine, tmp_path):
    """``Auto-Submitted: auto-generated`` without In-Reply-To/References/token: a form mailer's relay of a
    citizen's concern is not an answer to us. Nothing is lost; no automatic mail answers an automatic mail."""
    hub = await start_hub(engine, tmp_path)
    try:
        notice = simple_mail("Neue Meldung: Schlagloch Hauptstraße 5", "Meldung über das Formular der Gemeinde.",
                             sender="formular@gemeinde.example.org", headers={"Auto-Submitted": "auto-generated"})
        code, text, _ = await send(hub.port, notice)
        assert code == 250 and "stored as message" in text
        (case,) = hub.rows(case_t)
        assert case["state"] == "new" and hub.inbound()[0]["kind"] == "request"
        assert hub.acks_sent() == []
    finally:
        await hub.stop()


async def test_an_unthreaded_vacation_subject_alone_is_dropped_but_a_reply_mentioning_one_is_a_request(
        engine, tmp_path):
    hub = await start_hub(engine, tmp_path)
    try:
        vacation = simple_mail("Abwesenheitsnotiz: Termin", "Ich bin nicht im Haus.", sender="a@example.org")
        assert "not taken" in (await send(hub.port, vacation))[1]
        question = simple_mail("Frage zur Abwesenheitsnotiz meines Amts", "Wer vertritt die Sachbearbeiterin?",
                               sender="b@example.org")
        assert "stored as message" in (await send(hub.port, question))[1]
        assert len(hub.rows(case_t)) == 1
    finally:
        await hub.stop()


async def test_the_imap_path_drops_the_same_mail_and_lets_the_poller_mark_it_seen(engine, tmp_path):
    """The IMAP poller hands mail to ``accept_sync`` (no envelope: Return-Path is read instead)."""
    hub = await start_hub(engine, tmp_path)
    try:
        for name in ("newsletter_list_bulk.eml", "sieve_vacation_dovecot.eml"):
            outcome = await asyncio.to_thread(hub.intake.accept_sync, fixture(name))
            assert outcome.status == "dropped" and outcome.accepted, name  # accepted: the poller sets \\Seen
        assert hub.rows(case_t) == [] and hub.inbound() == []
    finally:
        await hub.stop()
