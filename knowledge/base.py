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

from knowledge.clarify import (
    AMBIGUOUS,
    KNOWN,
    MISSING,
    UNKNOWN,
    Clarification,
    Margins,
    Option,
    PlaceState,
    clarify,
)
from knowledge.federation import BUND, Federation, ServiceView
from knowledge.learning.router import CATALOGUE_HITS, LearnedRouting
from knowledge.learning.store import load_learned_models
from knowledge.lookup import Hit
from knowledge.models import Authority, CatalogArea, Responsibility, Service
from knowledge.regions import PlaceResolution, QueryPlace, RegionIndex, RegionInfo
from knowledge.responsibility import ResponsibilityIndex, Responsible
from knowledge.settings import DefaultKnowledgeSettings, KnowledgeSettings, LookupSettings
from knowledge.text import safe_html

# The fields a description may inherit from a wider catalogue, as the console names them.
_FIELD_LABELS = {
    "short_text": "Beschreibung",
    "documents": "Unterlagen",
    "fees": "Gebühren",
    "processing_time": "Bearbeitungszeit",
    "online_url": "Online-Dienst",
}

# How many candidate places are checked when a place is ambiguous (23795 has 14).
MAX_PLACE_CANDIDATES = 25
# A request without a place is checked against every municipality of the home region up to this many (a
# Kreis has at most a few hundred); above it (a Land) a missing place always needs clarifying.
MAX_HOME_PLACES = 400

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


OTHER_LOCATIONS_SHOWN = 8  # of a city's several locations for one service, this many are listed by name


def _location_json(a: Authority) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "street": a.street, "postcode": a.postcode, "city": a.city, "phone": a.phone}


def service_json(s: Service | ServiceView) -> dict[str, Any]:
    """A service as the lookup answers it; its catalogue texts cut to the allowed HTML (:func:`safe_html`).

    A federated description (:class:`~knowledge.federation.ServiceView`) also says which catalogue
    (owner ARS, ``""`` for the Bund) each part came from (``sources``) and the catalogue of its text.
    """
    out = {
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
        "catalogue": s.owner_ars or BUND,
    }
    if isinstance(s, ServiceView):
        out["leistung"] = s.leistung
        out["sources"] = s.sources_json()
        out["origin"] = s.origin
    return out


def _same_place(a: PlaceResolution, b: PlaceResolution) -> bool:
    """Whether two resolutions mean the same place (the same match, or the same candidates)."""
    if a.match is not None or b.match is not None:
        return a.match is not None and b.match is not None and a.match.ars == b.match.ars
    return {r.ars for r, _ in a.candidates} == {r.ars for r, _ in b.candidates}


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
    # Further locations registered for the same service and area (Berlin's Bürgerämter), in the index's order.
    other_locations: list[Authority] = field(default_factory=list)

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
            # A city's other Bürgerbüros: the first few with their address, and how many there are.
            "other_locations": [_location_json(a) for a in self.other_locations[:OTHER_LOCATIONS_SHOWN]],
            "other_locations_total": len(self.other_locations),
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
    #: The words of the query that named the place (when the place came from the query, not the place field).
    place_from_query: str | None = None

    def to_json(self) -> dict[str, Any]:
        place = self.place
        return {
            "query": self.query,
            "place_from_query": self.place_from_query,
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
    # "learned": the office is the one agents confirmed for this service at this place, where it differs
    # from the catalogue's responsible office (knowledge.learning); None: the catalogue's.
    authority_source: str | None = None

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
        lent: Iterable[tuple[str, str]] = (),
        clarification_team: Iterable[str] = (),
    ) -> None:
        """``lent``: (catalogue owner, area) pairs, the areas a catalogue's texts are valid in beyond its own."""
        self.settings = settings or LookupSettings()
        #: Authorities whose agents work the clarification queue ([regions] clarification_team); empty =
        #: those of the home region (hub.scope decides who that is).
        self.clarification_team: frozenset[str] = frozenset(clarification_team)
        self.regions = regions
        self.services: dict[str, Service] = {s.id: s for s in services}
        self.authorities: dict[str, Authority] = {a.id: a for a in authorities}
        self.responsibility = ResponsibilityIndex(responsibilities)
        # One search document per Leistung; descriptions valid per area (knowledge/federation.py).
        self.federation = Federation(self.services, lent)
        self.index = self.federation.index
        self._home: list[RegionInfo] | None = None  # the home region's municipalities, built on first use
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
            lent = [(c.owner_ars, c.area_ars) for c in session.exec(select(CatalogArea))]
            session.expunge_all()
        kb = cls(regions, services, authorities, responsibilities, settings.lookup, lent,
                 clarification_team=getattr(settings.regions, "clarification_team", ()))
        learning = getattr(settings, "learning", None)
        if learning is None or learning.enabled:
            kb.learning.replace(load_learned_models(engine))
        return kb

    # -- incremental updates (catalogue sync) -------------------------------------------------

    def apply_service(self, service: Service) -> None:
        """Add or replace one service; visible to the next lookup."""
        old = self.services.get(service.id)
        self.services[service.id] = service
        self.federation.replace(old, service)

    def remove_service(self, service_id: str) -> None:
        old = self.services.pop(service_id, None)
        if old is not None:
            self.federation.remove(service_id, old)

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
        """The place given explicitly, else one named in the text (:meth:`place_in_query`), else None."""
        if location is not None and clean_input(location).strip():
            return self.regions.resolve(location)
        if text:
            found = self.place_in_query(text)
            return found.resolution if found else None
        return None

    def place_in_query(self, text: str) -> QueryPlace | None:
        """The place a request or a search names: in a sentence as :meth:`RegionIndex.find_in_text` finds it,
        in a few keywords ("kfz ummelden Norderstedt") as :meth:`RegionIndex.find_in_query` does, which
        leaves words of the catalogue alone. The one rule of the console's search, ``/api/lookup`` and
        ``route``; ``QueryPlace.start``/``end`` say which words named it (None for a sentence's place)."""
        found = self.regions.find_in_text(text)
        keywords = self.regions.find_in_query(text, self.index.knows)
        if keywords is not None and (found is None or _same_place(found, keywords.resolution)):
            return keywords
        return QueryPlace(found, -1, -1, "") if found is not None else None

    def chain_areas(self, region: RegionInfo) -> list[str]:
        """The catalogue areas valid at a place: its region chain, most local first, then the Bund."""
        return [r.ars for r in self.regions.chain(region.ars)] + [BUND]

    def _view_on(self, service: Service | ServiceView, region: RegionInfo) -> ServiceView | None:
        """The Leistung of ``service`` as ``region`` sees it (None when it has no text valid there)."""
        key = service.leistung if isinstance(service, ServiceView) else self.federation.leistung_of(service.id)
        return self.federation.view(key, self.chain_areas(region)) if key else None

    def view_at(
        self, service: str | Service | ServiceView | None, place: str | RegionInfo | PlaceResolution | None = None
    ) -> ServiceView | None:
        """A service as a place sees it: the one rule behind every answer that shows a chosen service.

        ``service`` is a description id (as a case, an SMS answer or an Open311 ``service_code`` names it)
        or a description; ``place`` a place as typed, a resolved place or a region. The answer is what a
        lookup at that place shows for the Leistung: the most local text valid there, its gaps filled from
        wider catalogues, with ``sources`` and ``origin``. Without a known place, or when the Leistung has no
        text valid at the place, the description as its own catalogue sees it (its own text first, gaps
        filled from the catalogues above it). None for an unknown id.
        """
        if isinstance(service, str) or service is None:
            service = self.services.get((service or "").strip())
            if service is None:
                return None
        region = None
        if isinstance(place, str):
            place = self.resolve_place(place) if place.strip() else None
        if isinstance(place, PlaceResolution):
            if place.match is not None:
                region = place.match
            elif place.ambiguous:
                # As search() shows an ambiguous place: the first candidate with a text of the Leistung.
                for candidate, _score in place.candidates[:MAX_PLACE_CANDIDATES]:
                    if self._view_on(service, candidate) is not None:
                        region = candidate
                        break
        elif isinstance(place, RegionInfo):
            region = place
        view = self._view_on(service, region) if region is not None else None
        if view is None:
            row = service.primary if isinstance(service, ServiceView) else service
            key = self.federation.leistung_of(row.id)
            view = self.federation.view(key, self._own_chain(row)) if key else None
            if view is not None and view.primary.id != row.id:
                view = ServiceView(view.leistung, [row, *(t for t in view.texts if t.id != row.id)], view.area)
            if view is None:
                view = ServiceView(key or f"id:{row.id}", [row], row.owner_ars or BUND)
        view.origin = self.origin_text(view)
        return view

    def _own_chain(self, row: Service) -> list[str]:
        """The catalogue areas above a description's own catalogue (its owner's chain, then the Bund)."""
        owner = row.owner_ars or BUND
        if owner and self.regions.get(owner) is not None:
            return self.chain_areas(self.regions.get(owner))
        return [owner, BUND] if owner else [BUND]

    def responsible_for(self, service: Service | ServiceView, region: RegionInfo) -> Responsible:
        """Who does the service at ``region``: registrations for any of the Leistung's texts valid there."""
        view = self._view_on(service, region)
        if view is None:
            return self.responsibility.resolve(service.id, service.level, self.regions.chain(region.ars))
        ids = [t.id for t in view.texts]
        primary = service.primary.id if isinstance(service, ServiceView) else service.id
        if primary in ids and ids[0] != primary and view.texts[0].owner_ars == self.services[primary].owner_ars:
            # One catalogue's several texts of the Leistung: the one the request matched (Federation.view)
            # answers, so its registrations come first.
            ids.remove(primary)
            ids.insert(0, primary)
        return self.responsibility.resolve(ids, view.level, self.regions.chain(region.ars))

    def services_at(self, location: str | None = None) -> list[ServiceView]:
        """The catalogue as a place sees it, one row per Leistung (without a place: across all catalogues).

        The one implementation behind every catalogue listing (Open311 ``GET services``, the console).
        """
        place = self.resolve_place(location) if location else None
        chain = self.chain_areas(place.match) if place is not None and place.match is not None else None
        views = (self.federation.view(k, chain) for k in sorted(self.federation.leistungen))
        return sorted((v for v in views if v is not None), key=lambda v: (v.topic or "", v.name, v.id))

    def search(self, text: str, place: PlaceResolution | None, limit: int) -> list[tuple[ServiceView, float, str]]:
        """Ranked Leistungen for ``text`` as ``place`` sees them: (merged description, score, matched phrase);
        see :meth:`search_hits`."""
        return [(v, h.score, h.matched) for v, h in self.search_hits(text, place, limit)]

    def search_hits(self, text: str, place: PlaceResolution | None, limit: int) -> list[tuple[ServiceView, Hit]]:
        """Ranked Leistungen for ``text`` as ``place`` sees them: (merged description, score, matched phrase).

        One implementation for lookup and route (and so for the console, the JSON API, the web form and
        the queue). A known place sees only descriptions valid on its chain; an ambiguous place those valid
        at any of its candidates (the text shown is the best-ranked candidate's); no place: every Leistung
        once, represented by its widest text.
        """
        chains: list[list[str]] = []
        if place is not None and place.match is not None:
            chains = [self.chain_areas(place.match)]
        elif place is not None and place.ambiguous:
            chains = [self.chain_areas(r) for r, _ in place.candidates[:MAX_PLACE_CANDIDATES]]
        if not chains:
            hits = self.federation.search(text, None, limit)
            views = [(self.federation.view(h.id, None, h.stems), h) for h in hits]
        else:
            union = list(dict.fromkeys(a for c in chains for a in c))
            hits = self.federation.search(text, union, limit)
            views = []
            for h in hits:
                view = None
                for chain in chains:
                    view = self.federation.view(h.id, chain, h.stems)
                    if view is not None:
                        break
                views.append((view, h))
        out = [(v, h) for v, h in views if v is not None]
        for v, _h in out:
            v.origin = self.origin_text(v)
        return out

    def catalogue_name(self, owner: str) -> str:
        """A catalogue as an agent reads it: its region's name, or the Bund."""
        if not owner:
            return "Bund"
        region = self.regions.get(owner)
        return region.display_name if region is not None else owner

    def origin_text(self, view: ServiceView) -> str:
        """Where the parts of a description come from, in German: "Katalog München; Gebühren: Katalog …"."""
        main = view.primary.owner_ars or BUND
        parts = [f"Katalog {self.catalogue_name(main)}"]
        for name, label in _FIELD_LABELS.items():
            owner, _sid = view.sources.get(name, (main, ""))
            if owner != main and getattr(view, name, None):
                parts.append(f"{label}: Katalog {self.catalogue_name(owner)}")
        return "; ".join(parts)

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
            answer.other_locations = [
                self.authorities[a] for a in answer.responsible.alternatives if a in self.authorities
            ]
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
        words, named = query, None
        if place is None and query.strip():
            # No place field: a place typed into the query is the place, and its words are no service's.
            named = self.place_in_query(query)
            if named is not None:
                place = named.resolution
                if named.start >= 0:
                    words = named.rest(query)
        answers = [
            self._answer(view, score, matched, place)
            for view, score, matched in self.search(words, place, limit)
            if score >= self.settings.min_score
        ]
        return LookupResult(query, place, answers, named.text or None if named else None)

    def _nothing_here(self, text: str, place: PlaceResolution | None) -> str:
        """Why nothing matched: an empty request, nothing anywhere, or nothing valid at this place."""
        if not text.strip():
            return "leere Anfrage"
        if place is not None and place.match is not None:
            elsewhere = [v for v, score, _m in self.search(text, None, 3) if score >= self.settings.min_score]
            if elsewhere:
                owners = sorted({self.catalogue_name(v.owner_ars or BUND) for v in elsewhere})
                return (
                    f"kein in {place.match.display_name} gültiger Katalog beschreibt diese Leistung "
                    f"(nur der Katalog von {', '.join(owners)})"
                )
        return "keine passende Leistung gefunden"

    def route(self, text: str, location: str | None = None, *, service_id: str | None = None) -> RouteResult:
        """Decide service, place and authority for one request; say when a person must clarify.

        ``service_id`` is a service the client named (an Open311 ``service_code``): when it is known it is
        the service, with full confidence, and the text and place decide only the office; an unknown one
        is ignored (the text decides as for any request).
        """
        text = clean_input(text)[: self.settings.max_query_chars]
        place = self.resolve_place(location, text)
        named = self.services.get(service_id) if service_id else None
        evidence: dict[str, Hit] = {}  # candidate id → its hit (coverage, words explained and missed)
        if named is not None:
            view = self._view_on(named, place.match) if place is not None and place.match is not None else None
            candidates: list[tuple[Service | ServiceView, float]] = [(view or named, 100.0)]
            found = []
        else:
            hits = self.search_hits(text, place, CATALOGUE_HITS)
            found = [(v, h.score, h.matched) for v, h in hits]
            evidence = {v.id: h for v, h in hits}
            candidates = [(v, score) for v, score, _m in found[:5] if score >= self.settings.min_score]
        # The one hook of the learned router: with a model for the place's area, it ranks the candidates
        # (the catalogue's hits, valid at the place, by the id of the text the place sees).
        learned = None
        if text.strip() and named is None:
            hits = [Hit(v.id, score, matched) for v, score, matched in found]
            learned = self.learning.rank(text, place, hits, self.services, self.regions.chain)
        if learned is not None and learned.probabilities:
            views = {v.id: v for v, _s, _m in found}
            candidates = [(views.get(sid) or self.services[sid], 100.0 * p) for sid, p in learned.probabilities[:5]
                          if sid in views or sid in self.services]
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
            result.reason = self._nothing_here(text, place)
            return result
        # The model's calibrated margin decides where its probabilities are calibrated: the best candidate is
        # a service it has confirmed cases of. Else (a well-worded request for a service known only from
        # the catalogue) the catalogue's rule and margins, as without a model.
        calibrated = None
        if learned is not None and learned.probabilities and learned.probabilities[0][0] in learned.known:
            calibrated = learned.margin
        # The offices agents confirmed at this place (the place known) take part in the verdict: a request
        # the catalogue leaves without an office is not flagged for it when agents confirmed one.
        confirmed = {sid: aid for sid, aid in learned.offices.items() if aid in self.authorities} if learned else {}
        return self._clarify(result, place, evidence, calibrated, confirmed)

    def _clarify(
        self, result: RouteResult, place: PlaceResolution | None, evidence: dict[str, Hit] | None = None,
        calibrated: float | None = None, confirmed: dict[str, str] | None = None,
    ) -> RouteResult:
        """Fill in service, office and the clarification verdict of :func:`knowledge.clarify.clarify`.

        ``calibrated``: the candidates' scores are a learned router's probabilities (in percent) and this is
        its calibrated margin, which replaces the configured (lexical) margins. ``confirmed``: service id →
        the office agents confirmed for it at the (known) place (knowledge.learning); it is that service's
        office, for the verdict and the answer (``authority_source`` "learned" where it differs from the
        catalogue's).
        """
        confirmed = confirmed or {}
        if calibrated is not None:
            margins = Margins(calibrated, calibrated)
        else:
            margins = Margins(self.settings.clarify_office_margin, self.settings.clarify_service_margin)
        if place is None:
            places = self._home_places()
            state = PlaceState(MISSING, None, len(places))
        elif place.match is not None:
            places = [place.match]
            state = PlaceState(KNOWN)
        elif place.ambiguous:
            places = result.location_candidates[:MAX_PLACE_CANDIDATES]
            state = PlaceState(AMBIGUOUS, place.reason, len(result.location_candidates))
        else:
            places = []
            state = PlaceState(UNKNOWN, place.reason or "unbekannter Ort")
        reach = max(margins.office, margins.service)
        top = result.candidates[0][1] / 100.0
        options: list[Option] = []
        responsible: dict[str, Responsible] = {}
        for rank, (service, score) in enumerate(result.candidates):
            confidence = score / 100.0
            offices: set[str | None] = set()
            if service.id in confirmed and state.status == KNOWN:
                offices.add(confirmed[service.id])
            elif rank == 0 or top - confidence < reach:  # only a close competitor can change the verdict
                for region in places:
                    resp = self.responsible_for(service, region)
                    responsible.setdefault(service.id, resp)
                    offices.add(resp.authority_id)
            hit = (evidence or {}).get(service.id)
            options.append(Option(service.id, service.name, confidence, frozenset(offices), service.leika,
                                  *((hit.coverage, hit.words, hit.explained, hit.missed) if hit else ())))
        verdict = clarify(options, state, margins, calibrated=calibrated is not None)
        service = result.candidates[0][0]
        result.service = service
        result.confidence = result.candidates[0][1]
        best = options[0]
        if service.id in confirmed and state.status == KNOWN:
            result.authority, result.authority_level = self._confirmed_office(service, confirmed[service.id],
                                                                              places[0])
            catalogue = self.responsible_for(service, places[0]).authority_id
            result.authority_source = None if catalogue == result.authority.id else "learned"
        elif len(best.offices) == 1 and None not in best.offices:
            resp = responsible[service.id]
            result.authority = self.authorities.get(resp.authority_id or "")
            result.authority_level = self.acting_level(resp)
        elif state.status == KNOWN and responsible.get(service.id) and responsible[service.id].reason:
            # Nobody is registered at the place: the registry's own words say which level is missing.
            verdict = Clarification(True, responsible[service.id].reason)
        result.needs_clarification = verdict.needed or result.authority is None
        result.reason = verdict.reason if result.needs_clarification else None
        return result

    def _confirmed_office(self, service: Service | ServiceView, authority_id: str, region: RegionInfo
                          ) -> tuple[Authority, str | None]:
        """The office agents confirmed and the level it acts at: the level of its own registration on the
        place's chain (for this service or a level), else the level of the office's region."""
        office = self.authorities[authority_id]
        ids = [t.id for t in service.texts] if isinstance(service, ServiceView) else [service.id]
        level = self.responsibility.level_of(authority_id, ids, self.regions.chain(region.ars))
        if level is None:
            home = self.regions.get(office.region_ars) if office.region_ars else None
            level = home.level if home is not None else None
        return office, level

    def _home_places(self) -> list[RegionInfo]:
        """The municipalities of the home region: the candidate places of a request without a place.

        Empty when the home region has more than :data:`MAX_HOME_PLACES` (a Land): then a missing place
        always matters.
        """
        if self._home is None:
            home = self.regions.home_region
            places = [r for r in self.regions if r.level == "gemeinde" and home and r.ars.startswith(home)]
            self._home = places if len(places) <= MAX_HOME_PLACES else []
        return self._home
