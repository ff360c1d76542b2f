"""Find a case or a caller: the console's one search for a case token, a case number, a phone number or
an e-mail address, with the caller's earlier cases.

What the agent types is read with the queue's own rules, never a second copy of them:

* a case token (``K7QM-4XTR-9BQ2-H3ZP``, hyphens, blanks and case optional, O/I/L read as 0/1/1, and the
  old case-sensitive tokens) through :func:`hub.queue.cases.token_variants`, the rule of intake and the
  status page;
* a case number ``#123`` (or a bare number that is no phone number);
* a phone number in any usual German form (``0171 2345678``, ``+49 171 2345678``, ``(04551) 123-45``)
  through :func:`hub.queue.requests.normalise_phone`, the E.164 form threading compares;
* an e-mail address, case-insensitively (:func:`hub.queue.requests.normalise_email`).

A text that fits several readings (sixteen digits are a token and a phone number) is looked up as each.
The matches come first, newest first; then every other case that shares a phone number or an e-mail
address with a match (the caller's earlier cases), newest first.

Only cases the agent's scope covers are read (:meth:`hub.scope.Scope.case_clause` in the query and
:meth:`hub.scope.Scope.covers_case` for each row, the one scope rule): a case of another authority is
neither shown nor counted, and its contact data never widens the search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Engine

from hub.queue.cases import case_t, message_t, token_variants
from hub.queue.requests import normalise_email, normalise_phone
from hub.scope import Scope

MAX_QUERY = 200
_CASE_NUMBER = re.compile(r"(?:#|fall\s*#?|nr\.?\s*)\s*(\d{1,12})", re.I)
_BARE_NUMBER = re.compile(r"[1-9]\d{0,8}")
SNIPPET_CHARS = 160


@dataclass(frozen=True)
class FindQuery:
    """What a typed text can stand for: case tokens, a case number, a phone number, an e-mail address."""

    text: str
    tokens: tuple[str, ...] = ()
    case_id: int | None = None
    phone: str | None = None
    email: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.tokens or self.case_id or self.phone or self.email)

    @property
    def kinds(self) -> list[str]:
        """The readings, for the page: "token", "id", "phone", "email"."""
        return [k for k, v in (("token", self.tokens), ("id", self.case_id), ("phone", self.phone),
                               ("email", self.email)) if v]


def parse(raw: str | None) -> FindQuery:
    """Every reading of what the agent typed (:class:`FindQuery`; ``empty`` when it fits none)."""
    text = (raw or "").strip()[:MAX_QUERY]
    if not text:
        return FindQuery("")
    email = phone = None
    case_id = None
    if "@" in text:
        try:
            email = normalise_email(text)
        except ValueError:
            email = None
        return FindQuery(text, email=email)
    number = _CASE_NUMBER.fullmatch(text)
    if number:
        return FindQuery(text, case_id=int(number.group(1)))
    tokens = token_variants(text)
    try:
        phone = normalise_phone(text)
    except ValueError:
        phone = None
    if phone is None and _BARE_NUMBER.fullmatch(text):
        case_id = int(text)
    return FindQuery(text, tokens=tokens, case_id=case_id, phone=phone)


def _direct(q: FindQuery):
    c = case_t.c
    parts = []
    if q.tokens:
        parts.append(c.token.in_(q.tokens))
    if q.case_id:
        parts.append(c.id == q.case_id)
    if q.phone:
        parts.append(c.contact_phone == q.phone)
    if q.email:
        parts.append(func.lower(c.contact_email) == q.email)
    return or_(*parts)


def _newest_first(stmt):
    return stmt.order_by(case_t.c.created_at.desc(), case_t.c.id.desc())


def _snippets(conn, ids: list[int]) -> dict[int, str]:
    """The first citizen message of each case, shortened (shown escaped by the template/JS)."""
    if not ids:
        return {}
    first = (select(func.min(message_t.c.id)).where(message_t.c.case_id.in_(ids), message_t.c.direction == "in")
             .group_by(message_t.c.case_id))
    rows = conn.execute(select(message_t.c.case_id, message_t.c.subject, message_t.c.text)
                        .where(message_t.c.id.in_(first))).mappings()
    out = {}
    for r in rows:
        text = " ".join(((r["subject"] or "") + " " + (r["text"] or "")).split())
        out[r["case_id"]] = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
    return out


def _case_item(row: Any, snippet: str, reason: str) -> dict[str, Any]:
    created: datetime = row["created_at"]
    return {"id": row["id"], "state": row["state"], "channel": row["channel"], "created_at": created,
            "service": row["service_name"], "authority": row["authority_name"], "location": row["location"],
            "contact": {"name": row["contact_name"], "email": row["contact_email"], "phone": row["contact_phone"]},
            "snippet": snippet, "reason": reason}


def _reason(row: Any, q: FindQuery) -> str:
    """Why a case matched, in German (the page shows it beside the case)."""
    if q.tokens and row["token"] in q.tokens:
        return "Vorgangsnummer"
    if q.case_id and row["id"] == q.case_id:
        return "Fallnummer"
    if q.phone and row["contact_phone"] == q.phone:
        return "Telefonnummer"
    return "E-Mail-Adresse"


def find_cases(engine: Engine, raw: str | None, scope: Scope, kb: Any = None, limit: int = 20) -> dict[str, Any]:
    """The cases ``raw`` names and the caller's earlier cases, newest first, only those ``scope`` covers.

    Returns ``{"query", "kinds", "matches": [...], "earlier": [...], "truncated"}``; each case as
    :func:`_case_item` (no token: it is the citizen's key to the status page).
    """
    q = parse(raw)
    out: dict[str, Any] = {"query": q.text, "kinds": q.kinds, "matches": [], "earlier": [], "truncated": False}
    if q.empty or scope.empty:
        return out
    clause = scope.case_clause(kb)
    where = [_direct(q)] + ([clause] if clause is not None else [])
    with engine.connect() as conn:
        rows = conn.execute(_newest_first(select(case_t).where(*where)).limit(limit + 1)).mappings().all()
        rows = [r for r in rows if scope.covers_case(r, kb)]
        if len(rows) > limit:
            rows, out["truncated"] = rows[:limit], True
        phones = sorted({r["contact_phone"] for r in rows if r["contact_phone"]})
        emails = sorted({r["contact_email"].lower() for r in rows if r["contact_email"]})
        earlier: list[Any] = []
        if phones or emails:
            same = or_(*([case_t.c.contact_phone.in_(phones)] if phones else []),
                       *([func.lower(case_t.c.contact_email).in_(emails)] if emails else []))
            cond = [and_(same, case_t.c.id.not_in([r["id"] for r in rows]))]
            if clause is not None:
                cond.append(clause)
            earlier = conn.execute(_newest_first(select(case_t).where(*cond)).limit(limit + 1)).mappings().all()
            earlier = [r for r in earlier if scope.covers_case(r, kb)]
            if len(earlier) > limit:
                earlier, out["truncated"] = earlier[:limit], True
        snippets = _snippets(conn, [r["id"] for r in rows] + [r["id"] for r in earlier])
    out["matches"] = [_case_item(r, snippets.get(r["id"], ""), _reason(r, q)) for r in rows]
    out["earlier"] = [_case_item(r, snippets.get(r["id"], ""),
                                 "gleiche Telefonnummer" if r["contact_phone"] in phones else "gleiche E-Mail-Adresse")
                      for r in earlier]
    return out
