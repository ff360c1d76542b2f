"""The federated catalogue: one Leistung, many texts, each valid in its catalogue's area.

Modelled on PVOG / XZuFi 2.2 and LeiKa:

* Every service description (a :class:`~knowledge.models.Service` row) belongs to the catalogue of its
  owner (``owner_ars``). The catalogue's **area** is the owner's region (a Land, Kreis, Amt/Verband or
  Gemeinde; ``""`` is the Bund: valid nationwide), plus any areas the catalogue lends its texts to
  (:class:`~knowledge.models.CatalogArea`; the demo's Land catalogue is lent to Kreis Soest).
* Descriptions with the same LeiKa key are one **Leistung**. A description without a LeiKa key (the
  2016 Berlin export has none) **joins a Leistung by its name**: when its normalised name (the content
  words of the name, stemmed, in any order) is the name of a keyed text in another catalogue and of no
  other keyed Leistung (a keyed name also counts without its brackets: "Anmeldung einer Wohnung
  (Wohnsitz an- und ummelden)" is an "Anmeldung einer Wohnung"; the unkeyed name counts whole, so
  "Reisepass (vorläufiger Reisepass)" is not a "Reisepass"), it is a text of that Leistung (it is found through the
  Leistung's words and inherits its gaps, its own text stays its own). A name that no keyed Leistung has,
  or that two keyed Leistungen share, stands alone: a Leistung of its own, valid in its area only.
* For a place (its region chain, most local first, then the Bund), the Leistung's texts are the
  descriptions whose area is on the chain; the most local one wins, and a field it leaves empty
  (``MERGED_FIELDS``) comes from the next wider one. :class:`ServiceView` is that merged description and
  says which catalogue each part came from.

The search index (:class:`~knowledge.lookup.ServiceIndex`) holds **one document per Leistung**, not one
per description: its phrases are the distinct names and synonyms of all its texts (counted, so a phrase
leaves the document when its last text goes), its context the union of their topics and descriptions.
A national federation of a million descriptions is then an index of a few thousand documents plus, per
Leistung, a map area → description ids. A search for a place drops, inside the index's candidate walk,
every Leistung without a text on the place's chain, and shows only the chain's texts: a place never gets a
description from outside its chain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz.fuzz import token_sort_ratio

from knowledge.lookup import Hit, SearchDoc, ServiceIndex
from knowledge.text import terms

__all__ = ["BUND", "MERGED_FIELDS", "Federation", "ServiceView", "leistung_key", "name_key"]

BUND = ""  # the area of a nationwide catalogue (owner_ars "")
# Fields a more local text may leave empty and inherit from the next wider one (issue 13, item 2).
MERGED_FIELDS = ("short_text", "full_text", "documents", "fees", "processing_time", "online_url")
_CACHE_MAX = 500_000


def leistung_key(service: Any) -> str:
    """A description's own Leistung key: its LeiKa key, or itself when it has none (before any join by
    name, :meth:`Federation.key_of`)."""
    leika = getattr(service, "leika", None)
    return f"leika:{leika}" if leika else f"id:{service.id}"


_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")


def name_key(name: str | None, brackets: bool = True) -> frozenset[str]:
    """A name as the join by name compares it: its stemmed content words in any order ("Gewerbe-Anmeldung"
    and "Gewerbe - Anmeldung" are one name); with ``brackets=False`` without what stands in brackets."""
    text = name or "" if brackets else _BRACKETS.sub(" ", name or "")
    return frozenset(s for _t, s in terms(text))


def _stems(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for _t, s in terms(text)))


@dataclass(slots=True)
class _Leistung:
    """One Leistung: its texts by catalogue area, and the counted phrases and contexts of its texts."""

    key: str
    by_area: dict[str, list[str]] = field(default_factory=dict)  # area → description ids (sorted)
    phrases: dict[tuple[str, ...], list] = field(default_factory=dict)  # stems → [count, surface, names]
    contexts: dict[frozenset[str], int] = field(default_factory=dict)
    n_texts: int = 0
    rep: str | None = None  # the widest text, representing the Leistung before a place is known


class ServiceView:
    """A Leistung's description as one place sees it: the most local text, gaps filled from wider ones.

    It reads like a :class:`~knowledge.models.Service` (``id``, ``name``, ``fees``, ...; ``id`` and the
    name are the most local text's), and ``sources`` says for each field which catalogue (owner ARS, ``""``
    for the Bund) and which description it came from. ``texts`` are the descriptions used, most local first.
    """

    __slots__ = ("texts", "primary", "sources", "_merged", "leistung", "area", "origin")

    def __init__(self, leistung: str, texts: Sequence[Any], area: str | None) -> None:
        self.leistung = leistung
        self.texts = list(texts)
        self.primary = self.texts[0]
        self.area = area  # the catalogue area of the primary text as found on the chain
        self.sources: dict[str, tuple[str, str]] = {}
        self.origin = ""  # in words, for agents (set by the knowledge base, which knows the region names)
        self._merged: dict[str, Any] = {}
        p = self.primary
        for name in ("name", "level", "synonyms", "topic", "life_situation"):
            self.sources[name] = (p.owner_ars or BUND, p.id)
        for name in MERGED_FIELDS:
            for t in self.texts:
                value = getattr(t, name, None)
                if value:
                    self._merged[name] = value
                    self.sources[name] = (t.owner_ars or BUND, t.id)
                    break
            else:
                self._merged[name] = getattr(p, name, None)

    def __getattr__(self, name: str) -> Any:
        merged = object.__getattribute__(self, "_merged")
        if name in merged:
            return merged[name]
        return getattr(object.__getattribute__(self, "primary"), name)

    def sources_json(self) -> dict[str, dict[str, str]]:
        return {k: {"catalogue": owner, "id": sid} for k, (owner, sid) in self.sources.items()}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"ServiceView({self.leistung}, {[t.id for t in self.texts]})"


class Federation:
    """Descriptions grouped into Leistungen and areas, and the search index over the Leistungen.

    ``services`` is the description store (id → row) the knowledge base owns; ``lent`` maps a catalogue
    owner to the extra areas its texts are valid in. Updates are incremental and take microseconds per
    description, unless a phrase or a context appears or disappears, which re-indexes that one Leistung.
    """

    def __init__(
        self, services: dict[str, Any], lent: Iterable[tuple[str, str]] = (), index: ServiceIndex | None = None
    ) -> None:
        self.services = services
        self.index = index or ServiceIndex()
        self.lent: dict[str, set[str]] = {}
        for owner, area in lent:
            self.lent.setdefault(owner, set()).add(area)
        self.leistungen: dict[str, _Leistung] = {}
        self._of: dict[str, str] = {}  # description id → Leistung key
        # The join by name: name key → keyed Leistung → catalogue owner → texts; name key → unkeyed ids.
        self._keyed_names: dict[frozenset[str], dict[str, dict[str, int]]] = {}
        self._unkeyed: dict[frozenset[str], set[str]] = {}
        self._name_keys: dict[str, tuple[frozenset[str], ...]] = {}
        self._phrase_cache: dict[tuple, tuple[tuple[tuple[str, ...], str, bool], ...]] = {}
        self._context_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._dirty: set[str] = set()
        self._batch = 0
        self.begin()
        for s in services.values():
            self._add(s)
        self.commit()

    # ---------------------------------------------------------------- areas

    def areas_of(self, service: Any) -> list[str]:
        owner = service.owner_ars or BUND
        return [owner, *sorted(self.lent.get(owner, ()))]

    # ---------------------------------------------------------------- phrases of one description

    def phrases_of(self, s: Any) -> tuple[tuple[tuple[str, ...], str, bool], ...]:
        """(stems, surface, is name) of a description's name and synonyms, as the index groups them."""
        key = (s.name, *(x for x in s.synonyms or () if isinstance(x, str)))
        got = self._phrase_cache.get(key)
        if got is None:
            out: dict[tuple[str, ...], tuple[tuple[str, ...], str, bool]] = {}
            for n, text in enumerate(key):
                stems = _stems(text or "")
                if stems and stems not in out:
                    out[stems] = (stems, " ".join(text.split()), n == 0)
            got = tuple(out.values())
            if len(self._phrase_cache) >= _CACHE_MAX:
                self._phrase_cache.clear()
            self._phrase_cache[key] = got
        return got

    def phrase_keys(self, s: Any) -> frozenset[tuple[str, ...]]:
        return frozenset(p[0] for p in self.phrases_of(s))

    def _context_of(self, s: Any) -> frozenset[str]:
        text = s.short_text or (s.full_text or "")[:600]
        topic = " ".join(x for x in (s.topic, s.life_situation) if x)
        key = (topic, text)
        got = self._context_cache.get(key)
        if got is None:
            got = frozenset(st for _t, st in terms(f"{topic} {text}"))
            if len(self._context_cache) >= _CACHE_MAX:
                self._context_cache.clear()
            self._context_cache[key] = got
        return got

    # ---------------------------------------------------------------- the join by name

    def _name_keys_of(self, name: str) -> tuple[frozenset[str], ...]:
        """(the whole name's key, and its key without brackets when that differs), empty keys left out."""
        got = self._name_keys.get(name)
        if got is None:
            if len(self._name_keys) >= _CACHE_MAX:
                self._name_keys.clear()
            keys = dict.fromkeys(k for k in (name_key(name), name_key(name, brackets=False)) if k)
            got = self._name_keys[name] = tuple(keys)
        return got

    def _name_key(self, s: Any) -> frozenset[str]:
        keys = self._name_keys_of(s.name or "")
        return keys[0] if keys else frozenset()

    def joined_to(self, s: Any) -> str | None:
        """The keyed Leistung an unkeyed description joins by its name, or None (no key, or ambiguous)."""
        if getattr(s, "leika", None):
            return None
        nk = self._name_key(s)
        found = self._keyed_names.get(nk) if len(nk) > 0 else None
        if not found or len(found) != 1:
            return None
        (key, owners), = found.items()
        own = s.owner_ars or BUND
        return key if any(o != own for o in owners) else None

    def key_of(self, s: Any) -> str:
        """The Leistung a description belongs to: its LeiKa key, the keyed Leistung it joins by its name,
        or itself."""
        if getattr(s, "leika", None):
            return leistung_key(s)
        return self.joined_to(s) or leistung_key(s)

    def _count_name(self, s: Any, key: str, delta: int) -> None:
        """Count a keyed text under its name; re-home the unkeyed texts of that name when the join changes."""
        for nk in self._name_keys_of(s.name or ""):
            self._count_one(nk, s.owner_ars or BUND, key, delta)

    def _count_one(self, nk: frozenset[str], owner: str, key: str, delta: int) -> None:
        by_key = self._keyed_names.setdefault(nk, {})
        owners = by_key.setdefault(key, {})
        owners[owner] = owners.get(owner, 0) + delta
        if owners[owner] <= 0:
            del owners[owner]
            if not owners:
                del by_key[key]
                if not by_key:
                    del self._keyed_names[nk]
        for sid in sorted(self._unkeyed.get(nk, ())):
            row = self.services.get(sid)
            if row is not None and self._of.get(sid) != self.key_of(row):
                self._drop(sid, row)
                self._add(row)

    # ---------------------------------------------------------------- updates

    def begin(self) -> None:
        """Start a batch: Leistungen are re-indexed once, at :meth:`commit`."""
        self._batch += 1

    def commit(self) -> None:
        self._batch -= 1
        if self._batch == 0:
            for key in sorted(self._dirty):
                self._reindex(key)
            self._dirty.clear()

    def remove(self, service_id: str, old: Any) -> None:
        """Forget one description; ``old`` is the row as it was indexed."""
        self.begin()
        try:
            if service_id in self._of:
                self._drop(service_id, old)
        finally:
            self.commit()

    def replace(self, old: Any | None, new: Any) -> None:
        """Replace ``old`` (as it was indexed, or None) by ``new``."""
        self.begin()
        try:
            if old is not None and old.id in self._of:
                self._drop(old.id, old)
            self._add(new)
        finally:
            self.commit()

    def _add(self, s: Any) -> None:
        key = self.key_of(s)
        le = self.leistungen.get(key)
        if le is None:
            le = self.leistungen[key] = _Leistung(key)
        for area in self.areas_of(s):
            ids = le.by_area.setdefault(area, [])
            if s.id not in ids:
                ids.append(s.id)
                ids.sort()
        changed = False
        for stems, surface, is_name in self.phrases_of(s):
            cur = le.phrases.get(stems)
            if cur is None:
                le.phrases[stems] = [1, surface, 1 if is_name else 0]
                changed = True
            else:
                cur[0] += 1
                if is_name:
                    if not cur[2]:
                        changed = True
                    cur[2] += 1
        ctx = self._context_of(s)
        n = le.contexts.get(ctx, 0)
        le.contexts[ctx] = n + 1
        changed = changed or n == 0
        if le.n_texts == 0 or (le.rep is not None and self._width(s) < self._width(self.services[le.rep])):
            le.rep = s.id
        le.n_texts += 1
        self._of[s.id] = key
        if changed or le.n_texts == 1:
            self._dirty.add(key)
        if getattr(s, "leika", None):
            self._count_name(s, key, +1)
        else:
            nk = self._name_key(s)
            if nk:
                self._unkeyed.setdefault(nk, set()).add(s.id)

    def _drop(self, sid: str, s: Any) -> None:
        key = self._of.pop(sid)
        le = self.leistungen[key]
        for area in self.areas_of(s):
            ids = le.by_area.get(area)
            if ids is not None and sid in ids:
                ids.remove(sid)
                if not ids:
                    del le.by_area[area]
        changed = False
        for stems, _surface, is_name in self.phrases_of(s):
            cur = le.phrases.get(stems)
            if cur is None:
                continue
            cur[0] -= 1
            if is_name:
                cur[2] -= 1
                if not cur[2]:
                    changed = True
            if cur[0] <= 0:
                del le.phrases[stems]
                changed = True
        ctx = self._context_of(s)
        n = le.contexts.get(ctx, 0)
        if n <= 1:
            le.contexts.pop(ctx, None)
            changed = True
        else:
            le.contexts[ctx] = n - 1
        le.n_texts -= 1
        if le.rep == sid:
            le.rep = None  # found again when asked (:meth:`_rep`)
        if le.n_texts <= 0:
            del self.leistungen[key]
        if changed or le.n_texts <= 0:
            self._dirty.add(key)
        if getattr(s, "leika", None):
            self._count_name(s, key, -1)
        else:
            nk = self._name_key(s)
            ids = self._unkeyed.get(nk)
            if ids is not None:
                ids.discard(sid)
                if not ids:
                    del self._unkeyed[nk]

    @staticmethod
    def _width(s: Any) -> tuple[int, str, str]:
        # The widest catalogue first (the Bund, then a Land, ...), then by owner and id: deterministic.
        owner = s.owner_ars or BUND
        return (len(owner), owner, s.id)

    def _rep(self, le: _Leistung) -> str:
        """The Leistung's widest text (kept up to date on adds; searched again after it was removed)."""
        if le.rep is None:
            le.rep = min((sid for v in le.by_area.values() for sid in v), key=lambda i: self._width(self.services[i]))
        return le.rep

    @staticmethod
    def _union(le: _Leistung) -> frozenset[str]:
        out: set[str] = set()
        for c in le.contexts:
            out |= c
        return frozenset(out)

    def _reindex(self, key: str) -> None:
        le = self.leistungen.get(key)
        if le is None:
            self.index.remove(key)
            return
        names = sorted((p for p in le.phrases.values() if p[2]), key=lambda p: (-p[0], p[1]))
        synonyms = sorted(p[1] for p in le.phrases.values() if not p[2])
        head = names[0][1] if names else (synonyms.pop(0) if synonyms else key)
        self.index.upsert(
            SearchDoc(
                id=key,
                name=head,
                names=[p[1] for p in names[1:]],
                synonyms=synonyms,
                context_stems=self._union(le),
                leika=key[6:] if key.startswith("leika:") else None,
                order=self._rep(le),
            )
        )

    # ---------------------------------------------------------------- reading

    def leistung_of(self, service_id: str) -> str | None:
        return self._of.get(service_id)

    def texts_on(self, key: str, chain: Sequence[str]) -> list[tuple[str, str]]:
        """(area, description id) of a Leistung's texts on ``chain`` (areas, most local first)."""
        le = self.leistungen.get(key)
        if le is None:
            return []
        out = []
        for area in chain:
            for sid in le.by_area.get(area, ()):
                out.append((area, sid))
        return out

    def view(self, key: str, chain: Sequence[str] | None, stems: tuple[str, ...] = ()) -> ServiceView | None:
        """The Leistung's merged description at a place (``chain``), or None when it has no text there.

        Without a chain (no place yet) the widest text represents the Leistung. When one catalogue has
        several texts of a Leistung, the one with the phrase that matched (``stems``) comes first.
        """
        le = self.leistungen.get(key)
        if le is None:
            return None
        if chain is None:
            rows = [self.services[self._rep(le)]]
            area = rows[0].owner_ars or BUND
        else:
            found = self.texts_on(key, chain)
            if not found:
                return None
            seen: set[str] = set()
            rows = []
            for _area, sid in found:
                if sid not in seen:
                    seen.add(sid)
                    rows.append(self.services[sid])
            area = found[0][0]
            if stems and len(le.by_area.get(area, ())) > 1:
                # One catalogue with several texts under one key (München files "Waffenbesitzkarte
                # beantragen" and "Munition besitzen und erwerben" under one LeiKa key): the text the
                # request is about comes first, as its office is the one that answers it.
                same = [r for r in rows if r.owner_ars == rows[0].owner_ars]
                hit = self._closest_text(same, stems)
                if hit is not rows[0]:
                    rows.remove(hit)
                    rows.insert(0, hit)
        return ServiceView(key, rows, area) if rows else None

    def _closest_text(self, texts: Sequence[Any], stems: tuple[str, ...]) -> Any:
        """Of one catalogue's texts of a Leistung, the one the matched phrase (``stems``) belongs to; when
        the phrase is another catalogue's word for the Leistung, the text with the phrase most like it
        (rapidfuzz ``token_sort_ratio`` of the stems: "Anwohnerparkausweis" is closer to
        "Bewohnerparkausweis" than to "Parkausweis"); ties keep the catalogue's order."""
        for r in texts:
            if stems in self.phrase_keys(r):
                return r
        wanted = " ".join(stems)
        best, best_score = texts[0], -1.0
        for r in texts:
            score = max((token_sort_ratio(wanted, " ".join(k)) for k in self.phrase_keys(r)), default=0.0)
            if score > best_score + 1e-9:
                best, best_score = r, score
        return best

    def allow_for(self, chain: Sequence[str] | None):
        """The search filter of a place: a Leistung may be found only when it has a text on ``chain``.

        Its words are shared: a Leistung is one service nationwide, so a synonym one catalogue gives it
        helps every place find it; what a place is *shown* is only its own chain's texts (:meth:`view`).
        """
        if chain is None:
            return None
        chain = tuple(chain)
        leistungen = self.leistungen

        def allow(key: str) -> bool | None:
            le = leistungen.get(key)
            if le is None:
                return None
            by_area = le.by_area
            for area in chain:
                if area in by_area:
                    return True
            return None

        return allow

    def search(self, query: str, chain: Sequence[str] | None, limit: int) -> list[Hit]:
        return self.index.search(query, limit=limit, allow=self.allow_for(chain))

    def __len__(self) -> int:
        return len(self.leistungen)
