"""The paper round trip through the real queue: a form for a case, its scan ingested by the CLI and the
watched inbox, the request on the case, the review queue, the answer as a letter, purge and forget.

Real components throughout: the demo database (all regions, the demo catalogue), the intake writer,
the outbox dispatcher with the letter adapter, poppler, zxing-cpp and Tesseract.
"""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paper_support as P
import pytest
from console_support import KREIS, hub_engine, make_case, set_case
from PIL import Image
from pypdf import PdfReader
from rapidfuzz import fuzz
from sqlalchemy import func, select, update

from channels.paper import store
from channels.paper.code import decode
from channels.paper.outbound import LetterAdapter
from channels.paper.settings import PaperSettings
from hub.cli import main
from hub.queue.cases import attachment_t, audit_t, case_t, message_t
from hub.queue.intake import AttachmentStore
from hub.queue.outbox import Dispatcher, enqueue
from hub.queue.privacy import forget, purge
from hub.queue.settings import PrivacySettings, QueueSettings

SERVICE = "sh-wohnsitz-anmelden"


@pytest.fixture()
def hub(tmp_path, demo_db_url, monkeypatch):
    P.require_paper_tools(fonts=True)
    engine, url = hub_engine(tmp_path, demo_db_url)
    monkeypatch.setenv("CITIZEN_HUB_PAPER__HMAC_KEY", P.KEY)
    monkeypatch.setenv("CITIZEN_HUB_QUEUE__ATTACHMENT_DIR", str(tmp_path / "attachments"))
    monkeypatch.setenv("CITIZEN_HUB_PAPER__PRINT_DIR", str(tmp_path / "print"))
    monkeypatch.setenv("CITIZEN_HUB_PAPER__PDF_DPI", "200")
    yield engine, url
    engine.dispose()


def phone_case(engine) -> int:
    """A caller from Hitzhusen who asked for the form by post (a phone case, routed)."""
    case_id = make_case(engine, text="Ich möchte mich ummelden, schicken Sie mir bitte das Formular.", channel="phone",
                        phone="+4945511234", authority=("amt-010605005", "Amt Bad Bramstedt-Land"),
                        service=(SERVICE, "Anmeldung einer Wohnung"))
    set_case(engine, case_id, contact_name="Hans Müller", contact_address="Hauptstraße 1\n24576 Hitzhusen",
             location="Hitzhusen")
    return case_id


def fill_and_scan(pdf: bytes, angle: float = 1.5, text: str = P.CONCERN, seed: int = 3) -> bytes:
    page = P.write_in_box(P.rasterise(pdf, 200), 200, text)
    return P.scanned(page, angle, seed=seed)


def form_via_cli(url: str, out: Path, *extra: str) -> bytes:
    assert main(["paper", "form", "--db", url, "--service", SERVICE, *extra, "--out", str(out)]) == 0
    return out.read_bytes()


def ingest_json(url: str, capsys, *files: Path) -> tuple[int, list[dict]]:
    code = main(["paper", "ingest", "--db", url, "--json", *map(str, files)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    return code, lines


def test_paper_form_command_makes_the_form_of_the_case(hub, tmp_path):
    engine, url = hub
    case_id = phone_case(engine)
    pdf = form_via_cli(url, tmp_path / "form.pdf", "--case", str(case_id))
    fields = PdfReader(io.BytesIO(pdf)).get_fields()
    code = decode(fields["formcode"]["/V"], [P.KEY.encode()])
    with engine.connect() as conn:
        token = conn.execute(select(case_t.c.token).where(case_t.c.id == case_id)).scalar_one()
    assert code.case_id == case_id and code.case_token == token
    assert code.service_id == SERVICE and code.authority_id == "amt-010605005"
    assert fields["name"]["/V"] == "Hans Müller" and code.prefill.phone == "+4945511234"


@pytest.mark.parametrize(("args", "words"), [
    (["--service", "nope", "--location", "Hitzhusen"], "Keine Leistung"),
    (["--service", SERVICE], "Ort gebraucht"),
    (["--service", SERVICE, "--location", "Hitzhusen", "--case", "999999"], "no case"),
])
def test_paper_form_command_says_what_is_wrong(hub, tmp_path, capsys, args, words):
    assert main(["paper", "form", "--db", hub[1], *args, "--out", str(tmp_path / "x.pdf")]) == 2
    assert words in capsys.readouterr().err


def test_the_paper_commands_need_the_key(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CITIZEN_HUB_PAPER__HMAC_KEY")
    assert main(["paper", "form", "--db", hub[1], "--service", SERVICE, "--location", "Hitzhusen",
                 "--out", str(tmp_path / "x.pdf")]) == 2
    assert "hmac_key" in capsys.readouterr().err
    scan = tmp_path / "scan.jpg"
    scan.write_bytes(b"\xff\xd8\xff")
    assert main(["paper", "ingest", "--db", hub[1], str(scan)]) == 2
    assert main(["paper", "watch", "--db", hub[1], str(tmp_path), "--once"]) == 2
    assert "hmac_key" in capsys.readouterr().err and scan.is_file()


def test_a_scanned_form_comes_back_to_its_case_once(hub, tmp_path, capsys):
    engine, url = hub
    case_id = phone_case(engine)
    pdf = form_via_cli(url, tmp_path / "form.pdf", "--case", str(case_id))
    scan = tmp_path / "scan.jpg"
    scan.write_bytes(fill_and_scan(pdf))
    code, (page,) = ingest_json(url, capsys, scan)
    assert code == 0
    assert set(page) >= {"file", "page", "status", "case_id", "case_token", "service_id", "authority_id",
                         "authority_name", "text", "reason"}
    assert page["status"] == "accepted" and page["case_id"] == case_id and page["reason"] is None
    assert page["service_id"] == SERVICE and page["authority_id"] == "amt-010605005"
    assert page["authority_name"] == "Amt Bad Bramstedt-Land"
    assert fuzz.ratio(" ".join(P.CONCERN.split()), " ".join(page["text"].split())) >= 90
    # Ingested again (a second run, another copy of the same file): the same request, nothing new.
    copy = tmp_path / "nochmal.jpg"
    copy.write_bytes(scan.read_bytes())
    code, (again,) = ingest_json(url, capsys, copy)
    assert again["duplicate"] is True and again["case_id"] == case_id
    with engine.connect() as conn:
        messages = conn.execute(select(message_t).where(message_t.c.case_id == case_id)
                                .order_by(message_t.c.id)).mappings().all()
        files = conn.execute(select(attachment_t.c.content_type).join(message_t)
                             .where(message_t.c.case_id == case_id)).scalars().all()
        pages = conn.execute(select(store.page_t)).mappings().all()
    assert [(m["channel"], m["direction"]) for m in messages] == [("phone", "in"), ("paper", "in")]
    assert messages[1]["subject"].startswith("Papierformular F-")
    assert files == ["image/jpeg", "image/jpeg"]
    assert len(pages) == 1 and pages[0]["message_id"] == messages[1]["id"] and not pages[0]["needs_review"]


def test_a_blank_form_without_case_becomes_a_new_paper_case(hub, tmp_path, capsys):
    engine, url = hub
    pdf = form_via_cli(url, tmp_path / "blanko.pdf", "--location", "Hitzhusen")
    scan = tmp_path / "blanko.jpg"
    scan.write_bytes(fill_and_scan(pdf, text="Ich bin umgezogen.\nWas muss ich mitbringen?"))
    code, (page,) = ingest_json(url, capsys, scan)
    assert code == 0 and page["status"] == "accepted"
    with engine.connect() as conn:
        case = conn.execute(select(case_t).where(case_t.c.id == page["case_id"])).mappings().one()
        text = conn.execute(select(message_t.c.text).where(message_t.c.case_id == page["case_id"])).scalar_one()
    printed = decode(PdfReader(io.BytesIO(pdf)).get_fields()["formcode"]["/V"], [P.KEY.encode()])
    assert case["channel"] == "paper" and case["location"] == printed.location  # Hitzhusen's ARS
    assert printed.location.startswith("010605005")
    assert text.startswith("Formular: Anmeldung einer Wohnung")  # so that routing knows the form


def test_rejected_pages_are_reported_and_kept_for_review(hub, tmp_path, capsys):
    engine, url = hub
    blank = tmp_path / "leer.png"
    Image.new("L", (1654, 2339), 255).save(blank)
    forged = tmp_path / "fremd.jpg"
    forged.write_bytes(fill_and_scan(P.make_form(key=P.OTHER_KEY).pdf))
    code, pages = ingest_json(url, capsys, blank, forged)
    assert code == 1
    assert [(p["file"], p["status"]) for p in pages] == [("leer.png", "rejected"), ("fremd.jpg", "rejected")]
    assert pages[0]["reason"] == "the page is blank" and "forged" in pages[1]["reason"]
    assert all(p["case_id"] is None and p["service_id"] is None for p in pages)
    with engine.connect() as conn:
        rows = store.review_queue(conn)
        assert conn.execute(select(func.count()).select_from(case_t).where(case_t.c.channel == "paper")).scalar() == 0
    assert [(r["problem"], r["status"]) for r in rows] == [("blank", "rejected"), ("forged", "rejected")]
    files = AttachmentStore(tmp_path / "attachments")
    assert all(files.path(r["page_sha256"]).is_file() for r in rows)  # the page image: nothing lost


def test_the_watched_inbox_moves_files_and_never_deletes_one(hub, tmp_path, capsys):
    engine, url = hub
    case_id = phone_case(engine)
    pdf = form_via_cli(url, tmp_path / "form.pdf", "--case", str(case_id))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = fill_and_scan(pdf)
    (inbox / "post-1.jpg").write_bytes(good)
    (inbox / "kaputt.pdf").write_bytes(b"%PDF-1.4\nnot really")
    (inbox / ".versteckt.jpg").write_bytes(good)  # hidden: a scanner still writing it
    second = fill_and_scan(pdf, angle=-2.0, text="Nachtrag: ich komme am Montag.", seed=9)
    (inbox / "stapel.pdf").write_bytes(P.as_pdf([Image.open(io.BytesIO(second)), Image.new("L", (1654, 2339), 255)],
                                                200))
    assert main(["paper", "watch", "--db", url, str(inbox), "--once"]) == 0
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [".versteckt.jpg"]
    assert (inbox / "done" / "post-1.jpg").read_bytes() == good
    assert (inbox / "rejected" / "kaputt.pdf").read_bytes() == b"%PDF-1.4\nnot really"
    report = json.loads((inbox / "rejected" / "kaputt.pdf.json").read_text())
    assert report["reason"] == "the PDF is damaged and cannot be read"
    mixed = json.loads((inbox / "done" / "stapel.pdf.json").read_text())
    assert [p["status"] for p in mixed["pages"]] == ["accepted", "rejected"]
    # The same scan arrives again under the same name: kept beside the first, and no new request.
    (inbox / "post-1.jpg").write_bytes(good)
    assert main(["paper", "watch", "--db", url, str(inbox), "--once"]) == 0
    assert (inbox / "done" / "post-1-2.jpg").read_bytes() == good
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(message_t)
                         .where(message_t.c.case_id == case_id, message_t.c.channel == "paper")).scalar()
    assert n == 2  # post-1.jpg and page 1 of stapel.pdf, both on the case of the form


def test_the_watcher_keeps_a_file_when_the_hub_cannot_read_it(hub, tmp_path, monkeypatch):
    _engine, url = hub
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "scan.jpg").write_bytes(fill_and_scan(P.make_form().pdf))
    monkeypatch.setenv("PATH", "/nonexistent")  # no poppler, no tesseract: the hub's fault, not the file's
    assert main(["paper", "watch", "--db", url, str(inbox), "--once"]) == 0
    assert (inbox / "scan.jpg").is_file() and not (inbox / "rejected").exists()


# -- answers on paper ---------------------------------------------------------------------------------------


def _paper_case(engine, tmp_path) -> tuple[int, dict]:
    case_id = make_case(engine, text="Wo melde ich meinen Wohnsitz an?", channel="paper", authority=KREIS,
                        service=(SERVICE, "Anmeldung einer Wohnung"), external_id="F-000000000001/1/x")
    set_case(engine, case_id, contact_name="Erika Muster", contact_address="Dorfstraße 2\n23795 Bad Segeberg")
    with engine.connect() as conn:
        return case_id, dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())


def test_an_answer_to_a_paper_case_is_a_letter_in_the_print_folder_once(hub, tmp_path):
    engine, _url = hub
    case_id, row = _paper_case(engine, tmp_path)
    with engine.begin() as conn:
        message_id = enqueue(conn, row, text="Sie können sich im Bürgerbüro anmelden.\n\nBringen Sie Ihren Ausweis mit.",
                             author="agent:meier")
    settings = PaperSettings(hmac_key=P.KEY, print_dir=str(tmp_path / "print"))
    adapter = LetterAdapter(settings, engine)
    dispatcher = Dispatcher(engine, {"paper": adapter}, QueueSettings())
    assert asyncio.run(dispatcher.run_once()) == 1
    letters = list((tmp_path / "print").glob("*.pdf"))
    assert len(letters) == 1
    with engine.connect() as conn:
        sent = conn.execute(select(message_t).where(message_t.c.id == message_id)).mappings().one()
    assert sent["send_state"] == "sent" and letters[0].name == f"{sent['external_id']}.pdf"
    reader = PdfReader(letters[0])
    text = " ".join(page.extract_text() for page in reader.pages)
    assert "Erika Muster" in text and "Bürgerbüro" in text and row["token"] in text
    # The last page is the pre-filled reply form of the same case.
    reply_code = decode(reader.get_fields()["formcode"]["/V"], [P.KEY.encode()])
    assert reply_code.case_token == row["token"] and reply_code.prefill.name == "Erika Muster"
    # A retry of the same message (a second process, a crash after writing): still one letter.
    with engine.begin() as conn:
        conn.execute(update(message_t).where(message_t.c.id == message_id).values(send_state="pending",
                                                                                   next_attempt_at=None))
    asyncio.run(dispatcher.run_once())
    assert len(list((tmp_path / "print").glob("*.pdf"))) == 1


def test_a_letter_needs_a_postal_address(hub, tmp_path):
    engine, _url = hub
    case_id, row = _paper_case(engine, tmp_path)
    set_case(engine, case_id, contact_address=None, contact_name=None)
    with engine.begin() as conn:
        row = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
        message_id = enqueue(conn, row, text="Antwort", author="agent:meier")
    dispatcher = Dispatcher(engine, {"paper": LetterAdapter(PaperSettings(print_dir=str(tmp_path / "p")), engine)})
    asyncio.run(dispatcher.run_once())
    with engine.connect() as conn:
        sent = conn.execute(select(message_t).where(message_t.c.id == message_id)).mappings().one()
    assert sent["send_state"] == "failed" and "postal address" in sent["last_error"]
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").iterdir())


# -- privacy -------------------------------------------------------------------------------------------------


def test_forget_and_purge_cover_the_stored_scans(hub, tmp_path, capsys):
    engine, url = hub
    case_id = phone_case(engine)
    pdf = form_via_cli(url, tmp_path / "form.pdf", "--case", str(case_id))
    scan, blank = tmp_path / "scan.jpg", tmp_path / "leer.png"
    scan.write_bytes(fill_and_scan(pdf))
    Image.new("L", (1654, 2339), 255).save(blank)
    ingest_json(url, capsys, scan, blank)
    files = AttachmentStore(tmp_path / "attachments")
    with engine.connect() as conn:
        rows = conn.execute(select(store.page_t)).mappings().all()
        images = conn.execute(select(attachment_t.c.sha256)).scalars().all()
    rejected = next(r for r in rows if r["status"] == "rejected")
    assert len(images) == 2 and all(files.path(d).is_file() for d in images)
    # A rejected page is kept for [paper] rejected_retention_days (90 by default).
    assert rejected["purge_after"] > datetime.now(UTC) + timedelta(days=89)

    # Purge: a rejected page within its retention stays; one past it goes, with its image.
    purge(engine, PrivacySettings(), store=files)
    assert files.path(rejected["page_sha256"]).is_file()
    with engine.begin() as conn:
        conn.execute(update(store.page_t).where(store.page_t.c.id == rejected["id"])
                     .values(purge_after=datetime.now(UTC) - timedelta(minutes=1)))
    report = purge(engine, PrivacySettings(), store=files)
    assert report.channel_rows >= 1 and not files.path(rejected["page_sha256"]).exists()

    # Forget the caller: the case, its scan's row and the images go.
    report = forget(engine, phone="+4945511234", store=files)
    assert report.cases == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(store.page_t)).scalar() == 0
        actions = conn.execute(select(audit_t.c.action).where(audit_t.c.case_id == case_id)).scalars().all()
    assert "forget" in actions
    assert not any(files.path(d).exists() for d in images)


def test_purge_of_a_finished_paper_case_clears_its_page_rows(hub, tmp_path, capsys):
    engine, url = hub
    case_id = phone_case(engine)
    pdf = form_via_cli(url, tmp_path / "form.pdf", "--case", str(case_id))
    scan = tmp_path / "Hans_Mueller_scan.jpg"
    scan.write_bytes(fill_and_scan(pdf))
    ingest_json(url, capsys, scan)
    set_case(engine, case_id, state="closed", closed_at=datetime.now(UTC) - timedelta(days=400),
             state_changed_at=datetime.now(UTC) - timedelta(days=400))
    files = AttachmentStore(tmp_path / "attachments")
    assert main(["purge", "--db", url]) == 0
    with engine.connect() as conn:
        row = conn.execute(select(store.page_t)).mappings().one()
        left = conn.execute(select(func.count()).select_from(attachment_t)).scalar()
    assert row["source_name"] is None and row["case_id"] == case_id and left == 0
    assert not any(p.is_file() for p in files.root.rglob("*"))
