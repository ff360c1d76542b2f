"""A scan file into the queue: the one implementation behind ``paper ingest``, ``paper watch`` and
``POST /api/paper/scans``.

For every page of the file (:func:`channels.paper.scans.reader.read_scan`):

* accepted → its :class:`~hub.queue.requests.InboundRequest` goes through the queue's intake (threaded
  onto the form's case by its token; the same page twice is the same request), then its row in the
  review queue is written, with the message it became;
* rejected → its page image goes into the attachment store and its row, with the reason, into the
  review queue: nothing that came in is lost.

The answer for each page is a plain dict (the ``--json`` line of the CLI, an element of the API's
``pages``), made only after the commits. Reading runs in a worker thread (zxing, Pillow, poppler and
Tesseract release the GIL or run as processes), so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from channels.paper import store
from channels.paper.request import to_request
from channels.paper.scans.reader import PageOutcome, read_scan
from channels.paper.settings import PaperSettings
from hub.queue.intake import AttachmentStore, IntakeResult, RequestRejected
from hub.queue.requests import InboundRequest

Submit = Callable[[InboundRequest], Awaitable[IntakeResult]]


class Names:
    """Service and authority names by id, read from the knowledge tables (a CLI needs no whole KB)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[tuple[str, str], str | None] = {}

    def _name(self, table: str, key: str | None) -> str | None:
        if not key:
            return None
        if (table, key) not in self._cache:
            from knowledge.models import Authority, Service

            t = {"service": Service.__table__, "authority": Authority.__table__}[table]
            with self.engine.connect() as conn:
                self._cache[(table, key)] = conn.execute(select(t.c.name).where(t.c.id == key)).scalar()
        return self._cache[(table, key)]

    def service(self, service_id: str | None) -> str | None:
        return self._name("service", service_id)

    def authority(self, authority_id: str | None) -> str | None:
        return self._name("authority", authority_id)


class PaperIngest:
    """Reads scan files and hands their pages to the queue; see the module docstring."""

    def __init__(self, engine: Engine, submit: Submit, settings: PaperSettings, files: AttachmentStore,
                 names: Names | None = None) -> None:
        self.engine = engine
        self.submit = submit
        self.settings = settings
        self.files = files
        self.names = names or Names(engine)

    async def ingest(self, data: bytes, filename: str, *, raw_ref: str | None = None,
                     keep_original: bool = False) -> list[dict[str, Any]]:
        """Every page's answer, after its request (or its rejection) is committed.

        ``keep_original`` stores the file itself in the attachment store (uploads, which exist nowhere
        else); a file on disk is referred to by ``raw_ref`` instead. Raises ``IntakeUnavailable`` (and
        the hub's own problems: no key, no poppler, no tesseract) so that the caller keeps the file.
        """
        self.settings.verification_keys()  # no key: the hub's problem, raised before anything is read
        outcomes = await asyncio.to_thread(read_scan, data, filename, self.settings)
        file_sha = hashlib.sha256(data).hexdigest()
        source_sha = await asyncio.to_thread(self.files.put, data) if keep_original else None
        if keep_original and raw_ref is None:
            raw_ref = f"paper-scan:{file_sha}"
        answers = []
        for outcome in outcomes:
            if outcome.accepted:
                answers.append(await self._accept(outcome, raw_ref, source_sha))
            else:
                answers.append(await asyncio.to_thread(self._reject, outcome, file_sha, source_sha))
        return answers

    def _answer(self, outcome: PageOutcome, **values: Any) -> dict[str, Any]:
        code = outcome.code
        authority_id = code.authority_id if code and outcome.accepted else None
        base = {
            "file": outcome.file, "page": outcome.page, "status": outcome.status, "case_id": None, "case_token": None,
            "service_id": code.service_id if code and outcome.accepted else None, "authority_id": authority_id,
            "authority_name": self.names.authority(authority_id), "text": outcome.text, "reason": outcome.reason,
            "form_id": code.form_id if code else None, "confidence": outcome.confidence,
            "needs_review": outcome.needs_review if outcome.accepted else True, "review": list(outcome.review),
            "source": outcome.source, "duplicate": False,
        }
        return base | values

    async def _accept(self, outcome: PageOutcome, raw_ref: str | None, source_sha: str | None) -> dict[str, Any]:
        code = outcome.code
        assert code is not None
        service_name = await asyncio.to_thread(self.names.service, code.service_id)
        request = to_request(outcome, service_name=service_name, raw_ref=raw_ref)
        if code.case_token is None and service_name:
            # A blank form for a service, with no case behind it: the form's title tells routing what
            # the citizen's words are about (they often leave it out: "I have moved, what do I need?").
            request = request.model_copy(update={"text": f"Formular: {service_name}\n\n{request.text}".strip()})
        try:
            result = await self.submit(request)
        except RequestRejected as exc:
            outcome.status, outcome.reason, outcome.problem = "rejected", str(exc), "limits"
            return await asyncio.to_thread(self._reject, outcome, outcome.content_hash, source_sha)
        await asyncio.to_thread(self._record_accepted, outcome, result, source_sha)
        return self._answer(outcome, case_id=result.case_id, case_token=result.token, duplicate=not result.created)

    def _record_accepted(self, outcome: PageOutcome, result: IntakeResult, source_sha: str | None) -> None:
        code = outcome.code
        assert code is not None
        with self.engine.begin() as conn:
            store.record(conn, {
                "key": outcome.external_id, "source_name": outcome.file[:255], "source_sha256": source_sha,
                "page": outcome.page, "status": "accepted", "form_id": code.form_id, "source": outcome.source,
                "case_id": result.case_id, "message_id": result.message_id, "confidence": outcome.confidence,
                "needs_review": outcome.needs_review, "review_notes": "; ".join(outcome.review) or None,
            })

    def _reject(self, outcome: PageOutcome, file_sha: str, source_sha: str | None) -> dict[str, Any]:
        page_sha = self.files.put(outcome.page_jpeg) if outcome.page_jpeg else None
        key = f"rejected/{file_sha}/{outcome.page if outcome.page is not None else 'file'}"
        with self.engine.begin() as conn:
            _id, created = store.record(conn, {
                "key": key, "source_name": outcome.file[:255], "source_sha256": source_sha, "page": outcome.page,
                "status": "rejected", "problem": outcome.problem, "reason": outcome.reason,
                "form_id": outcome.code.form_id if outcome.code else None, "source": outcome.source,
                "needs_review": True, "page_sha256": page_sha,
                "purge_after": datetime.now(UTC) + timedelta(days=self.settings.rejected_retention_days),
            })
        return self._answer(outcome, duplicate=not created)
