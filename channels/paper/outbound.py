"""The ``letter`` adapter: an answer to a paper case becomes a DIN 5008 letter PDF in the print folder.

The letter's file is named by the outbound message's stable id (``F-…``, :func:`hub.queue.outbox.
new_external_id`) and created exclusively (written under a temporary name, fsynced, then hard-linked
to its name, which fails if the name exists). So a letter is in the folder whole or not at all, and
a retry, or a second hub process, can never put the same answer into the post twice.

The sender is the office the case is routed to (its address from the knowledge tables); with
``[paper] letter_reply_form`` a pre-filled form for the citizen's reply is the letter's last page, so
the conversation can go on by post and come back to the same case.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from pathlib import Path
from typing import Any

from pypdf import PdfReader, PdfWriter
from sqlalchemy import select
from sqlalchemy.engine import Engine

from channels.paper.code import Prefill
from channels.paper.forms.form import FormSpec, Office, render_form
from channels.paper.forms.letter import LetterSpec, render_letter
from channels.paper.settings import PaperSettings, paper_settings
from hub.queue.adapters import OutboundMessage, SendResult
from hub.queue.cases import case_t

log = logging.getLogger(__name__)


class LetterAdapter:
    """Writes answers as letters into ``[paper] print_dir``; ``send`` never raises."""

    name = "letter"

    def __init__(self, settings: PaperSettings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.folder = Path(settings.print_dir)
        self.engine = engine

    def _case(self, case_id: int) -> tuple[dict[str, Any] | None, Any, Any]:
        """The case row, its authority and its service (knowledge tables), where the database has them."""
        if self.engine is None:
            return None, None, None
        from knowledge.models import Authority, Service

        with self.engine.connect() as conn:
            row = conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().first()
            if row is None:
                return None, None, None
            row = dict(row)
            authority = service = None
            if row.get("authority_id"):
                found = conn.execute(select(Authority.__table__).where(Authority.__table__.c.id == row["authority_id"])
                                     ).mappings().first()
                authority = Authority(**found) if found else None
            if row.get("service_id"):
                found = conn.execute(select(Service.__table__).where(Service.__table__.c.id == row["service_id"])
                                     ).mappings().first()
                service = Service(**found) if found else None
        return row, authority, service

    def render(self, message: OutboundMessage) -> bytes:
        """The letter's PDF (with the reply form where configured and possible)."""
        row, authority, service = self._case(message.case_id)
        sender = (Office.from_authority(authority) if authority is not None
                  else Office(id="", name=self.settings.letter_sender))
        recipient = tuple((message.recipient or "").splitlines())
        subject = message.subject or f"Ihr Anliegen [#{message.case_token}]"
        pdf = render_letter(LetterSpec(sender=sender, recipient=recipient, text=message.text, subject=subject,
                                       case_token=message.case_token, letter_id=message.external_id,
                                       signature=self.settings.letter_signature))
        if not (self.settings.letter_reply_form and self.settings.hmac_key and authority is not None
                and service is not None and row is not None):
            return pdf
        contact = message.contact or {}
        form = render_form(FormSpec(
            service_id=service.id, service_name=service.name, office=sender, documents=tuple(service.documents or ()),
            online_url=service.online_url or "", location=row.get("location") or "", case_id=row["id"],
            case_token=row["token"],
            prefill=Prefill(name=contact.get("name") or "", address=contact.get("postal_address") or "",
                            email=contact.get("email") or "", phone=contact.get("phone") or ""),
        ), self.settings.signing_key())
        writer = PdfWriter()
        for part in (pdf, form.pdf):
            writer.append(PdfReader(io.BytesIO(part)))
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()

    def _write(self, message: OutboundMessage) -> SendResult:
        if not (message.recipient or "").strip():
            return SendResult.failed("the case has no postal address for a letter")
        name = "".join(c for c in (message.external_id or f"message-{message.message_id}")
                       if c.isalnum() or c in "-_")
        target = self.folder / f"{name}.pdf"
        if target.exists():
            return SendResult.sent(f"already in the print folder as {target.name}")
        try:
            pdf = self.render(message)
        except ValueError as exc:  # no address, a code that does not fit: retrying cannot help
            return SendResult.failed(f"the letter cannot be made: {exc}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{name}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(pdf)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, target)  # fails if the letter is there already: never twice
            except FileExistsError:
                return SendResult.sent(f"already in the print folder as {target.name}")
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            return SendResult.retry(f"the print folder cannot be written: {exc.strerror or exc}")
        return SendResult.sent(f"letter {target.name} in the print folder")

    async def send(self, message: OutboundMessage) -> SendResult:
        try:
            return await asyncio.to_thread(self._write, message)
        except Exception as exc:  # an adapter must not raise; the outbox records the failure
            log.warning("letter adapter: %s", type(exc).__name__)
            return SendResult.failed(f"the letter could not be made ({type(exc).__name__})")


def build_letter_adapter(settings: Any) -> LetterAdapter:
    """The ``paper`` channel's outbound adapter (``hub.plugins``), with the hub's database for the sender."""
    from hub.db import make_engine

    database = getattr(settings, "database", None)
    engine = make_engine(database.url) if database is not None else None
    return LetterAdapter(paper_settings(settings), engine)
