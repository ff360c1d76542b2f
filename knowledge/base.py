"""The knowledge base as one object: a citizen's words and place → service and responsible authority.

``KnowledgeBase`` keeps everything a lookup needs in memory (the region index of all of Germany,
the service index, authorities and the responsibility registrations), so a lookup never touches the
database. It is built once from the database (``KnowledgeBase.load``) and updated in place by
catalogue changes (``apply_service`` / ``remove_service`` / ...), which is what makes a synced change
visible in lookups without a rebuild.

Two questions are answered here:

* ``lookup(query, location)`` — for the agent console and ``/api/lookup``: ranked services, each with
  the authority responsible at that place (or the candidate authorities when the place is ambiguous).
* ``route(text, location)`` — for the request queue and ``citizen-hub route``: one decision in the
  stable JSON shape of the route contract, saying when a person has to clarify.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from knowledge.learning.router import CATALOGUE_HITS, LearnedRouting
from knowledge.learning.store import load_learned_models
from knowledge.lookup import ServiceIndex
from knowledge.models import Authority, Responsibility, Service
from knowledge.regions import PlaceResolution, RegionIndex, RegionInfo
from knowledge.responsibility import ResponsibilityIndex, Responsible
from knowledge.settings import DefaultKnowledgeSettings, KnowledgeSettings, LookupSettings
from knowledge.text import safe_html

# How many candidate places are checked when a place is ambiguous (23795 has 14).
MAX_PLACE_CANDIDATES = 25

# C0/C1 control characters except tab and newline: they carry no meaning in a request and would
# end up in logs and pages.
_CONTROL = dict.fromkeys(c for c in range(0x20) if c not in (9, 10)) | dict.fromkeys(range(0x7F, 0xA0))


def clean_input(text: str | None) -> str:
    """Make untrusted text safe to match: str only, NFC, no control characters, no lone surrogates."""
    if not text:
        return ""
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return unicodedata.normalize("NFC", text).translate(_CONTROL)


def region_json(region: RegionInfo | None) -> dict[str, Any] | None:
    if region is None:
        return None
    return {"ars": region.ars, "name": region.display_name, "level": region.level}


def authority_json(a: Authority) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "kind": a.kind,
        "region_ars": a.region_ars,
        "street": a.street,
        "postcode": a.postcode,
        "city": a.city,
        "phone": a.phone,
        "email": a.email,
        "website": a.website,
        "opening_hours": a.opening_hours,
        "is_demo": a.is_demo,
    }


def service_json(s: Service) -> dict[str, Any]:
    """A service as the lookup answers it; its catalogue texts cut to the allowed HTML (:func:`safe_html`)."""
    return {
        "id": s.id,
        "name": s.name,
        "leika": s.leika,
        "level": s.level,
        "short_text": safe_html(s.short_text),
        "documents": [safe_html(d) for d in s.documents or []],
        "fees": safe_html(s.fees),
        "processing_time": safe_html(s.processing_time),
        "online_url": s.online_url,
        "topic": s.topic,
    }


@dataclass
class ServiceAnswer:
    """One ranked service with who does it at the citizen's place."""

    service: Service
    score: float
    matched: str
    responsible: Responsible | None  # None when no single place is known
    authority: Authority | None
    # When the place is ambiguous: the distinct authorities of the candidate places.
    authority_candidates: list[tuple[Authority, list[RegionInfo]]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": service_json(self.service),
            "score": round(self.score, 1),
            "matched": self.matched,
            "authority": authority_json(self.authority) if self.authority else None,
            "responsibility": None,
            "authority_candidates": [
                {"authority": authority_json(a), "places": [r.display_name for r in places]}
                for a, places in self.authority_candidates
            ],
        }
        if self.responsible is not None:
            out["responsibility"] = {
                "via": self.responsible.via,
                "region": {"ars": self.responsible.region_ars, "name": self.responsible.region_name},
                "level": self.responsible.level,
                "reason": self.responsible.reason,
            }
        return out


@dataclass
class LookupResult:
    query: str
    place: PlaceResolution | None
    answers: list[ServiceAnswer]

    def to_json(self) -> dict[str, Any]:
        place = self.place
        return {
            "query": self.query,
            "location": region_json(place.match) if place else None,
            "location_candidates": [region_json(r) for r, _ in place.candidates] if place and place.ambiguous else [],
            "location_reason": place.reason if place else None,
            "results": [a.to_json() for a in self.answers],
        }


@dataclass
class RouteResult:
    """One routing decision in the shape of the ``citizen-hub route`` contract."""

    service: Service | None
    authority: Authority | None
    authority_level: str | None
    location: RegionInfo | None
    candidates: list[tuple[Service, float]]
    location_candidates: list[RegionInfo]
    needs_clarification: bool
    reason: str | None
    confidence: float = 0.0
    # Set when the area's learned model ranked the candidates (knowledge.learning): the calibrated
    # probabilities of every candidate service, best first, summing to 1; the candidates' scores are
    # then these probabilities in percent. None: the scores are the catalogue's match scores (0..100).
    probabilities: list[tuple[str, float]] | None = None
    learned_area: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": (
                {"id": self.service.id, "name": self.service.name, "leika": self.service.leika}
                if self.service
                else None
            ),
            "authority": (
                {"id": self.authority.id, "name": self.authority.name, "level": self.authority_level}
                if self.authority
                else None
            ),
            "location": {"ars": self.location.ars, "name": self.location.display_name} if self.location else None,
            "candidates": [
                {"id": s.id, "name": s.name, "leika": s.leika, "score": round(score, 1)}
                for s, score in self.candidates
            ],
            "location_candidates": [{"ars": r.ars, "name": r.display_name} for r in self.location_candidates],
            "needs_clarification": self.needs_clarification,
            "reason": self.reason,
        }


class KnowledgeBase:
    """Everything a lookup needs, in memory. Build with :meth:`load`."""

    def __init__(
        self,
        regions: RegionIndex,
        services: Iterable[Service],
        authorities: Iterable[Authority],
        responsibilities: Iterable[Responsibility],
        settings: LookupSettings | None = None,
    ) -> None:
        self.settings = settings or LookupSettings()
        self.regions = regions
        self.services: dict[str, Service] = {s.id: s for s in services}
        self.authorities: dict[str, Authority] = {a.id: a for a in authorities}
        self.responsibility = ResponsibilityIndex(responsibilities)
        self.index = ServiceIndex.from_services(self.services.values())
        self.learning = LearnedRouting(home_region=getattr(regions, "home_region", "") or "")

    @classmethod
    def load(cls, engine: Engine, settings: KnowledgeSettings | None = None) -> KnowledgeBase:
        """Read regions, services, authorities and responsibilities from the database.

        ``settings`` is anything with ``regions`` and ``lookup`` sections (the hub's settings).
        """
        settings = settings or DefaultKnowledgeSettings()
        with Session(engine) as session:
            regions = RegionIndex.from_session(session, home_region=settings.regions.home_region)
            services = list(session.exec(select(Service)))
            authorities = list(session.exec(select(Authority)))
            responsibilities = list(session.exec(select(Responsibility)))
            session.expunge_all()
        kb = cls(regions, services, authorities, responsibilities, settings.lookup)
        learning = getattr(settings, "learning", None)
        if learning is None or learning.enabled:
            kb.learning.replace(load_learned_models(engine))
        return kb

    # -- incremental updates (catalogue sync) -------------------------------------------------

    def apply_service(self, service: Service) -> None:
        """Add or replace one service; visible to the next lookup."""
        self.services[service.id] = service
        self.index.upsert_service(service)

    def remove_service(self, service_id: str) -> None:
        self.services.pop(service_id, None)
        self.index.remove(service_id)

    def apply_authority(self, authority: Authority) -> None:
        self.authorities[authority.id] = authority

    def remove_authority(self, authority_id: str) -> None:
        self.authorities.pop(authority_id, None)

    def apply_responsibility(self, row: Responsibility) -> None:
        self.responsibility.add(row)

    def remove_responsibility(self, row: Responsibility) -> None:
        self.responsibility.discard(row)

    # -- questions ----------------------------------------------------------------------------

    def resolve_place(self, location: str | None, text: str = "") -> PlaceResolution | None:
        """The place given explicitly, else one named in the text, else None."""
        if location is not None and clean_input(location).strip():
            return self.regions.resolve(location)
        if text:
            return self.regions.find_in_text(text)
        return None

    def responsible_for(self, service: Service, region: RegionInfo) -> Responsible:
        return self.responsibility.resolve(service.id, service.level, self.regions.chain(region.ars))

    def acting_level(self, resp: Responsible) -> str:
        """The level the authority acts at: the level mark, or for an override the overriding region's level."""
        if resp.via == "override" and resp.region_ars:
            region = self.regions.get(resp.region_ars)
            if region is not None:
                return region.level
        return resp.level

    def _answer(self, service: Service, score: float, matched: str, place: PlaceResolution | None) -> ServiceAnswer:
        answer = ServiceAnswer(service, score, matched, None, None)
        if place is None:
            return answer
        if place.match is not None:
            answer.responsible = self.responsible_for(service, place.match)
            answer.authority = self.authorities.get(answer.responsible.authority_id or "")
        elif place.ambiguous:
            groups = self._authority_groups(service, [r for r, _ in place.candidates])
            if len(groups) == 1 and None not in groups:
                # Every candidate place has the same office (a county service under a shared
                # postcode): no need to ask which village the caller lives in.
                (authority_id, (responsible, _places)), = groups.items()
                answer.responsible = responsible
                answer.authority = self.authorities.get(authority_id)
            else:
                answer.authority_candidates = [
                    (self.authorities[aid], places)
                    for aid, (_resp, places) in groups.items()
                    if aid is not None and aid in self.authorities
                ]
        return answer

    def _authority_groups(
        self, service: Service, places: list[RegionInfo]
    ) -> dict[str | None, tuple[Responsible, list[RegionInfo]]]:
        groups: dict[str | None, tuple[Responsible, list[RegionInfo]]] = {}
        for region in places[:MAX_PLACE_CANDIDATES]:
            resp = self.responsible_for(service, region)
            groups.setdefault(resp.authority_id, (resp, []))[1].append(region)
        return groups

    def lookup(self, query: str, location: str | None = None, limit: int | None = None) -> LookupResult:
        """Ranked services for a free-text query, each with the authority responsible at ``location``."""
        query = clean_input(query)[: self.settings.max_query_chars]
        limit = limit or self.settings.max_results
        place = self.resolve_place(location)
        answers = []
        for hit in self.index.search(query, limit=limit):
            if hit.score < self.settings.min_score:
                continue
            service = self.services.get(hit.id)
            if service is not None:
                answers.append(self._answer(service, hit.score, hit.matched, place))
        return LookupResult(query, place, answers)

    def route(self, text: str, location: str | None = None) -> RouteResult:
        """Decide service, place and authority for one request; say when a person must clarify."""
        text = clean_input(text)[: self.settings.max_query_chars]
        all_hits = self.index.search(text, limit=CATALOGUE_HITS)
        hits = [h for h in all_hits[:5] if h.score >= self.settings.min_score]
        candidates = [(self.services[h.id], h.score) for h in hits if h.id in self.services]
        place = self.resolve_place(location, text)
        # The one hook of the learned router: with a model for the place's area, it ranks the candidates.
        learned = self.learning.rank(text, place, all_hits, self.services, self.regions.chain) if text.strip() else None
        if learned is not None and learned.probabilities:
            candidates = [(self.services[sid], 100.0 * p) for sid, p in learned.probabilities[:5]]
        location_candidates = [r for r, _ in place.candidates] if place and place.ambiguous else []
        result = RouteResult(
            service=None,
            authority=None,
            authority_level=None,
            location=place.match if place else None,
            candidates=candidates,
            location_candidates=location_candidates,
            needs_clarification=True,
            reason=None,
            confidence=candidates[0][1] if candidates else 0.0,
            probabilities=learned.probabilities if learned is not None else None,
            learned_area=learned.area if learned is not None else None,
        )
        if not candidates:
            result.reason = "no matching service" if text.strip() else "empty request"
            return result
        service, score = candidates[0]
        result.service = service
        if place is None:
            result.reason = "no place given for a place-dependent service"
            return result
        if place.match is not None:
            resp = self.responsible_for(service, place.match)
            if resp.authority_id is None:
                result.reason = resp.reason
                return result
            result.authority = self.authorities.get(resp.authority_id)
            result.authority_level = self.acting_level(resp)
        elif place.ambiguous:
            groups = self._authority_groups(service, location_candidates)
            if len(groups) == 1 and None not in groups:
                (authority_id, (resp, _)), = groups.items()
                result.authority = self.authorities.get(authority_id)
                result.authority_level = self.acting_level(resp)
            else:
                result.reason = (
                    f"the place is ambiguous ({len(location_candidates)} candidates) and they have "
                    f"{len(groups)} different responsible authorities for this service"
                )
                return result
        else:
            result.reason = place.reason or "unknown place"
            return result
        if score < self.settings.confident_score:
            result.reason = f"low confidence in the service ({score:.0f} < {self.settings.confident_score:.0f})"
            return result
        result.needs_clarification = False
        return result
