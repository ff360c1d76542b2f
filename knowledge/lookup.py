"""In-memory search from a citizen's words to the services of the catalogue.

The index is term based, not string-similarity based: comparing the query with every name by a whole-string
ratio is slow (a full scan) and dilutes long sentences ("ich bin umgezogen und muss mich ummelden" is
mostly not the string "Ummelden"). Instead:

* Every name and synonym of a service is a *phrase*. Its content words are folded (ü→ue, ß→ss) and
  stemmed (:mod:`knowledge.text`). Phrases with the same stems form one *group* (the same wording in many
  municipal catalogues is one group), and an inverted index maps ``stem → groups``. Topic and description
  are *context*: indexed per service, they add evidence but are never what a hit is named after.
* Each query word is *expanded* into catalogue terms, each with a match quality 0..1: the exact stem; typo
  corrections (optimal string alignment distance ≤ 1, ≤ 2 for long words, found through a symmetric-delete
  index with a character-trigram fallback); catalogue compounds that contain the word ("anmeld" →
  "wohnsitzanmeld", the compound's head weighing more than its modifier); the parts of a query compound
  ("wohnsitzanmeld" → "wohnsitz" + "anmeld"); and the known head of an unknown compound ("Erstwohnsitz" →
  "wohnsitz"). Expansions depend only on the vocabulary and are cached until it changes.
* Candidate groups share an expanded term with the query, rarest terms first; a very common term only adds
  evidence to candidates found already, so "beantragen" does not walk a tenth of the catalogue. At most
  ``_MAX_CANDIDATES`` groups are scored exactly.
* A group scores by how much of *the phrase* the query explains (idf-weighted) and how much of *the query*
  the phrase explains, half each; query words that nothing in the catalogue explains ("Mallorca") barely
  count, so a long sentence around a service name does not dilute its score. A service scores by its best
  phrase, plus a share of the query words that only its other phrases or its context explain, plus a little
  for a related name and for literal closeness (rapidfuzz ``token_sort_ratio`` of the stems), which breaks
  ties between services that share a synonym.

Scores are 0..100: about 95-100 for a name or synonym given exactly, 80-95 for one with a typo or inside a
longer sentence, below 55 for weak, partial evidence.

Updates are incremental (:meth:`ServiceIndex.upsert`, :meth:`ServiceIndex.remove`): no rebuild; document
frequencies are live counts.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from rapidfuzz.distance import OSA
from rapidfuzz.fuzz import token_sort_ratio

from knowledge.text import ACTION_STEMS, equivalents, query_terms, split_compound, stem, terms, trigrams

if TYPE_CHECKING:  # pragma: no cover
    from knowledge.models import Service

__all__ = ["Hit", "SearchDoc", "ServiceIndex", "MAX_QUERY_CHARS"]

MAX_QUERY_CHARS = 2000  # longer queries are cut: nobody describes a service in more
_MAX_QUERY_TERMS = 32  # content words of a query that are looked at
_NAME_WEIGHT = 1.0
_SYNONYM_WEIGHT = 0.95
_CONTEXT_WEIGHT = 0.5  # a query word found only in the topic/description counts half
_CONTEXT_ONLY_CAP = 0.45  # a service found only through its description scores at most 45
_PC_WEIGHT = 0.5  # phrase score = this × phrase coverage + the rest × query coverage
_UNEXPLAINED = 0.3  # a query word no phrase explains still counts this much in the query coverage
_UNKNOWN_WORD = 0.5  # weight of a query word the catalogue does not know, × the largest idf
_NAME_BONUS = 0.05  # × how well the name matches, when a synonym matched best
_EXTRA_BONUS = 0.4  # × the share of the query explained by other phrases and context only
_MAX_CANDIDATES = 80  # phrase groups scored exactly per query
_MAX_VISITS = 1500  # phrases (members of scored groups) looked at per query
_RF_WEIGHT = 0.05  # × rapidfuzz token_sort_ratio of query and best phrase (stems): the literal closeness
_MAX_CONTAINING = 48  # catalogue compounds a query word may expand to
_MAX_WORD = 48  # longer query words are only matched exactly
_FUZZY_MIN_LEN = 5  # shorter words are not typo-corrected: too many neighbours
_EXPANSION_CACHE = 50_000
_EQUIVALENT_QUALITY = 0.85  # a word of the same meaning (knowledge.text.equivalents) as a match of the word
_WORD_EXPLAINED = 0.5  # a query word counts as explained by a service from this evidence (Hit.words)
_KNOWN_WORD = 0.8  # a query word the catalogue knows (Hit.missed): an expansion at least this close
# A known query word counts as missed by a service below this evidence: a compound part it explains
# ("Hund" of "Hundesteuer" in "Hund anmelden") is not missed.
_WORD_MISSED = 0.2
_UNSEEN = object()
# The place filter of a search: per document, the phrase stems that may count, True for all, None for none.
Allow = Callable[[str], "Container[tuple[str, ...]] | bool | None"]


@dataclass(slots=True)
class SearchDoc:
    """What the index needs to know about one service."""

    id: str
    name: str
    synonyms: list[str] = field(default_factory=list)
    text: str = ""
    topic: str = ""
    leika: str | None = None
    # More names (indexed with a name's weight): a Leistung's document names every text's name.
    names: list[str] = field(default_factory=list)
    # The context's stems, when the caller has them already (then ``text`` and ``topic`` are not read).
    context_stems: frozenset[str] | None = None
    order: str = ""  # what ties are broken by (default: the id)


@dataclass(slots=True, frozen=True)
class Hit:
    """One search result: the service id, a score 0..100 and the name or synonym that matched best."""

    id: str
    score: float
    matched: str
    stems: tuple[str, ...] = ()  # the matched phrase's stems (its group), () for a context-only hit
    # How much of the matched phrase's object words the query explains (idf-weighted, 0..1; 0 for a context-only
    # hit; actions such as "beantragen" do not count), and
    # how many of the query's words it explains: "helfen" explains a small part of "Hilfe zur Pflege".
    coverage: float = 1.0
    words: int = 1
    # The query's words (stems) this service explains, and those the catalogue knows that it leaves
    # (almost) untouched: "Hund anmelden" → Wohnsitzanmeldung explains ("anmeld",) and misses ("hund",).
    explained: tuple[str, ...] = ()
    missed: tuple[str, ...] = ()


class _Group:
    """Phrases with the same content stems: a name repeated as a synonym, one wording in many catalogues.

    Postings point to groups, not phrases, so a wording copied into a thousand municipal catalogues is
    found and scored once per query.
    """

    __slots__ = ("stems", "members", "rank_factor")

    def __init__(self, stems: tuple[str, ...]):
        self.stems = stems
        self.members: dict[int, tuple[str, float, bool]] = {}  # phrase id → (service id, weight, is name)
        # Candidate ranking prefers short phrases: "Parkausweis" over "Parkausweis für Handwerksbetriebe".
        self.rank_factor = 1.0 / math.sqrt(len(stems))


class _Phrase:
    """One name or synonym as written (shown as ``Hit.matched``); what is searched is its group."""

    __slots__ = ("text", "gid", "surfaces")

    def __init__(self, text: str, gid: int, surfaces: tuple[str, ...]):
        self.text = text
        self.gid = gid
        self.surfaces = surfaces  # words that differ from their stem, for the spelling vocabulary


class _Entry:
    __slots__ = ("doc", "pids", "gids", "context")

    def __init__(self, doc: SearchDoc, pids: list[int], gids: tuple[int, ...], context: frozenset[str]):
        self.doc = doc
        self.pids = pids
        self.gids = gids
        self.context = context


def _deletes(term: str) -> list[str]:
    """The term and every string one deletion away from it (symmetric-delete spelling correction)."""
    return [term] + [term[:i] + term[i + 1 :] for i in range(len(term))]


def _set_add(index: dict, key: str, value: str) -> None:
    # Most keys of the spelling indexes hold one value: keep it bare, make a set only for the second.
    cur = index.get(key)
    if cur is None:
        index[key] = value
    elif isinstance(cur, set):
        cur.add(value)
    elif cur != value:
        index[key] = {cur, value}


def _set_discard(index: dict, key: str, value: str) -> None:
    cur = index.get(key)
    if cur is None:
        return
    if isinstance(cur, set):
        cur.discard(value)
        if len(cur) == 1:
            index[key] = next(iter(cur))
        elif not cur:
            del index[key]
    elif cur == value:
        del index[key]


def _set_items(index: dict, key: str) -> tuple[str, ...] | set[str]:
    cur = index.get(key)
    if cur is None:
        return ()
    return cur if isinstance(cur, set) else (cur,)


class ServiceIndex:
    """Typo-, inflection- and compound-tolerant search over service names, synonyms and descriptions.

    Safe to share between threads: the routing worker searches in its own thread while catalogue sync
    updates the index in the event loop, so searches and updates take turns on one lock.
    """

    def __init__(self, entries: Iterable[SearchDoc] = ()):
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._phrases: list[_Phrase | None] = []
        self._free_pids: list[int] = []
        self._groups: list[_Group | None] = []
        self._free_gids: list[int] = []
        self._group_of: dict[tuple[str, ...], int] = {}
        self._post: dict[str, set[int]] = {}  # stem → groups (names, synonyms)
        self._ctx_post: dict[str, set[str]] = {}  # stem → service ids (topic, description)
        self._vocab: dict[str, int] = {}  # name/synonym surface words and stems → reference count
        self._deletes: dict[str, str | set[str]] = {}  # one-deletion variant → vocabulary words
        self._tri: dict[str, str | set[str]] = {}  # trigram → stems of the phrase index
        self._leika: dict[str, set[str]] = {}
        self._expansions: dict[tuple[str, str], tuple[tuple[str, float, bool, float], ...]] = {}
        self._idf: dict[str, float] = {}  # stem → idf, dropped when the stem's document frequency changes
        self._idf_n = 0.0  # the group count the cached idfs were computed with
        for doc in entries:
            self.upsert(doc)

    @classmethod
    def from_services(cls, services: Iterable[Service]) -> ServiceIndex:
        """Build an index from :class:`knowledge.models.Service` rows."""
        return cls(doc_from_service(s) for s in services)

    # ------------------------------------------------------------------ updates

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._entries

    def knows(self, word: str) -> bool:
        """Whether ``word`` (as typed) is a word of some service's name or synonyms: such a word in a query
        asks for that service, even where a municipality has the same name."""
        for _surface, s in terms(word):
            if s in self._post or _surface in self._vocab:
                return True
        return False

    def get(self, doc_id: str) -> SearchDoc | None:
        entry = self._entries.get(doc_id)
        return entry.doc if entry else None

    def upsert(self, doc: SearchDoc) -> None:
        """Add a service, or replace the one with the same id. Visible to the next :meth:`search`."""
        with self._lock:
            self._upsert(doc)

    def _upsert(self, doc: SearchDoc) -> None:
        if doc.id in self._entries:
            self._remove(doc.id)
        pids: list[int] = []
        seen: set[tuple[str, ...]] = set()
        sources = [(doc.name or "", _NAME_WEIGHT)]
        sources += [(n, _NAME_WEIGHT) for n in doc.names or () if isinstance(n, str)]
        n_names = len(sources)
        sources += [(syn, _SYNONYM_WEIGHT) for syn in doc.synonyms or () if isinstance(syn, str)]
        for n, (text, weight) in enumerate(sources):
            pairs = terms(text)
            if not pairs:
                continue
            stems = tuple(dict.fromkeys(s for _t, s in pairs))
            if stems in seen:  # "Meldebescheinigung" as name and again as synonym
                continue
            seen.add(stems)
            surfaces = tuple(dict.fromkeys(t for t, s in pairs if t != s))
            pids.append(self._add_phrase(doc.id, weight, " ".join(text.split()), stems, surfaces, n < n_names))
        if doc.context_stems is not None:
            context = doc.context_stems
        else:
            context = frozenset(s for _t, s in terms(f"{doc.topic or ''} {doc.text or ''}"))
        for s in context:
            post = self._ctx_post.get(s)
            if post is None:
                self._ctx_post[s] = {doc.id}
            else:
                post.add(doc.id)
        if doc.leika:
            self._leika.setdefault(doc.leika, set()).add(doc.id)
        gids = tuple(self._phrases[pid].gid for pid in pids)  # type: ignore[union-attr]
        self._entries[doc.id] = _Entry(doc, pids, gids, context)

    def upsert_service(self, service: Service) -> None:
        """:meth:`upsert` for a :class:`knowledge.models.Service` row."""
        self.upsert(doc_from_service(service))

    def remove(self, doc_id: str) -> bool:
        """Drop a service; returns whether it was there."""
        with self._lock:
            return self._remove(doc_id)

    def _remove(self, doc_id: str) -> bool:
        entry = self._entries.pop(doc_id, None)
        if entry is None:
            return False
        for pid in entry.pids:
            self._remove_phrase(pid)
        for s in entry.context:
            post = self._ctx_post.get(s)
            if post is not None:
                post.discard(doc_id)
                if not post:
                    del self._ctx_post[s]
        if entry.doc.leika:
            ids = self._leika.get(entry.doc.leika)
            if ids is not None:
                ids.discard(doc_id)
                if not ids:
                    del self._leika[entry.doc.leika]
        return True

    def _add_phrase(
        self, doc_id: str, weight: float, text: str, stems: tuple[str, ...], surfaces: tuple[str, ...], is_name: bool
    ) -> int:
        gid = self._group_of.get(stems)
        if gid is None:
            gid = self._add_group(stems)
        group = self._groups[gid]
        assert group is not None
        phrase = _Phrase(text, gid, surfaces)
        if self._free_pids:
            pid = self._free_pids.pop()
            self._phrases[pid] = phrase
        else:
            pid = len(self._phrases)
            self._phrases.append(phrase)
        group.members[pid] = (doc_id, weight, is_name)
        for word in stems + surfaces:
            n = self._vocab.get(word, 0)
            self._vocab[word] = n + 1
            if n == 0 and len(word) >= _FUZZY_MIN_LEN - 1:
                for d in _deletes(word):
                    _set_add(self._deletes, d, word)
                self._vocab_changed()
        return pid

    def _remove_phrase(self, pid: int) -> None:
        phrase = self._phrases[pid]
        if phrase is None:
            return
        self._phrases[pid] = None
        self._free_pids.append(pid)
        group = self._groups[phrase.gid]
        assert group is not None
        group.members.pop(pid, None)
        if not group.members:
            self._remove_group(phrase.gid)
        for word in group.stems + phrase.surfaces:
            n = self._vocab.get(word, 0) - 1
            if n > 0:
                self._vocab[word] = n
            else:
                self._vocab.pop(word, None)
                if len(word) >= _FUZZY_MIN_LEN - 1:
                    for d in _deletes(word):
                        _set_discard(self._deletes, d, word)
                    self._vocab_changed()

    def _add_group(self, stems: tuple[str, ...]) -> int:
        group = _Group(stems)
        if self._free_gids:
            gid = self._free_gids.pop()
            self._groups[gid] = group
        else:
            gid = len(self._groups)
            self._groups.append(group)
        self._group_of[stems] = gid
        idf = self._idf
        for s in stems:
            idf.pop(s, None)
            post = self._post.get(s)
            if post is None:
                self._post[s] = {gid}
                if len(s) >= 4:
                    for g in set(trigrams(s)):
                        _set_add(self._tri, g, s)
                self._vocab_changed()
            else:
                post.add(gid)
        return gid

    def _remove_group(self, gid: int) -> None:
        group = self._groups[gid]
        assert group is not None
        self._groups[gid] = None
        self._free_gids.append(gid)
        del self._group_of[group.stems]
        for s in group.stems:
            self._idf.pop(s, None)
            post = self._post.get(s)
            if post is None:
                continue
            post.discard(gid)
            if not post:
                del self._post[s]
                if len(s) >= 4:
                    for g in set(trigrams(s)):
                        _set_discard(self._tri, g, s)
                self._vocab_changed()

    def clear_cache(self) -> None:
        """Forget the cached query-word expansions (benchmarks measure the first sight of a word)."""
        with self._lock:
            self._expansions.clear()

    def _vocab_changed(self) -> None:
        if self._expansions:
            self._expansions.clear()

    # ------------------------------------------------------------------ search

    def search(self, query: str, limit: int = 10, allow: Allow | None = None) -> list[Hit]:
        """The best ``limit`` services for ``query``, best first. Never raises on odd text.

        ``allow``, if given, says per document which of its phrases may count (a container of phrase
        stems, or True for all) or that it may not be found at all (None): the place filter of
        :mod:`knowledge.federation`.
        """
        if not isinstance(query, str) or limit <= 0 or not self._entries:
            return []
        query = query[:MAX_QUERY_CHARS]
        key = query.strip()
        if len(key) == 14 and key.isascii() and key.isdigit():  # a LeiKa key
            with self._lock:
                ids = sorted(self._leika.get(key, ()))
            if allow is not None:
                ids = [i for i in ids if allow(i) is not None]
            if ids:
                return [Hit(i, 100.0, key) for i in ids[:limit]]
        words: dict[str, str] = {}
        for surface, s in query_terms(query):
            if s not in words:
                words[s] = surface
                if len(words) >= _MAX_QUERY_TERMS:
                    break
        if not words:
            return []
        with self._lock:
            q = _Query(self, list(words), [self._expand(surface, s) for s, surface in words.items()])
            q.allow = allow
            pool_size = limit + 5
            return q.rank(q.collect_docs(q.score_groups(q.candidates()), pool_size), limit, pool_size)

    # ------------------------------------------------------------------ query expansion

    def _expand(self, surface: str, s: str) -> tuple[tuple[str, float, bool, float], ...]:
        """Catalogue terms a query word stands for.

        Each as ``(stem, quality 0..1, is_part_of_the_query_word, share_of_the_stem_covered)``; the last is
        non-zero for catalogue compounds containing the word and lets several query words add up to one
        compound.
        """
        key = (surface, s)
        cached = self._expansions.get(key)
        if cached is not None:
            return cached
        post = self._post
        out: dict[tuple[str, bool], tuple[float, float]] = {}

        def put(term: str, q: float, piece: bool = False, cov: float = 0.0) -> None:
            k = (term, piece)
            if q > out.get(k, (0.0, 0.0))[0]:
                out[k] = (q, cov)

        bases: list[tuple[str, float]] = []
        if len(s) > _MAX_WORD:
            pass  # no catalogue word is that long: a pasted link, a hash, a keyboard mash
        elif s in post:
            put(s, 1.0)
            bases.append((s, 1.0))
        elif surface in post:
            put(surface, 1.0)
            bases.append((surface, 1.0))
        else:
            # Not a catalogue word: it may still be part of catalogue compounds ("selbstständig" in
            # "Selbstständigkeit"), a typo of a catalogue word, or a compound whose head or stem the
            # catalogue knows ("Erstwohnsitz" is a Wohnsitz, "Friseurin" a Friseur).
            bases.append((s, 1.0))
            if len(surface) >= _FUZZY_MIN_LEN:
                for term, sim in self._corrections(surface, s)[:2]:
                    q = 0.95 * sim
                    put(term, q)
                    bases.append((term, q))
            for k in range(1, len(s) // 2 + 1):
                if s[k:] in post:
                    put(s[k:], 0.3 + 0.6 * (len(s) - k) / len(s))
                    break
            for k in range(len(s) - 1, 4, -1):
                if s[:k] in post:
                    if k * 5 >= len(s) * 3:
                        put(s[:k], 0.35 + 0.45 * k / len(s))
                    break
        # Words that mean the same in a request ("kfz" for the catalogue's "Auto"): a little below the word
        # itself, so a service that uses the asked word still comes first.
        for alt in equivalents(s):
            if alt in post:
                put(alt, _EQUIVALENT_QUALITY)
                bases.append((alt, _EQUIVALENT_QUALITY))
        for base, bq in bases[:4]:
            if len(base) >= 4:
                # A four-letter stem cut from a longer word ("eich" of "Eiche") is too often the end of
                # an unrelated word ("Kennzeichen"): it may only start a compound ("Hunde" → "Hundesteuer").
                prefix_only = len(base) == 4 and base != surface
                for term, q in self._containing(base):
                    if not prefix_only or term.startswith(base):
                        put(term, q * bq, False, bq * len(base) / len(term))
        parts = split_compound(s, post) if len(s) <= _MAX_WORD else None
        if parts:
            for part in parts:
                put(part, len(part) / len(s), True)
        # Sorted, so that the outcome never depends on set order (string hashing differs per process).
        result = tuple(sorted((t, q, piece, cov) for (t, piece), (q, cov) in out.items()))
        if len(self._expansions) >= _EXPANSION_CACHE:
            self._expansions.clear()
        self._expansions[key] = result
        return result

    def _corrections(self, surface: str, s: str) -> list[tuple[str, float]]:
        """Stems of catalogue words within a small edit distance of the query word, best first."""
        cands: set[str] = set()
        deletes = self._deletes
        for w in {surface, s}:
            for d in _deletes(w):
                cands.update(_set_items(deletes, d))
        found: dict[str, float] = {}
        post = self._post

        def consider(word: str) -> None:
            max_d = 1 if len(surface) < 8 else 2
            dist = min(
                OSA.distance(surface, word, score_cutoff=max_d), OSA.distance(s, word, score_cutoff=max_d)
            )
            if dist > max_d:
                return
            sim = 1.0 - dist / max(len(surface), len(word))
            for target in {word, stem(word)}:
                if target in post and sim > found.get(target, 0.0):
                    found[target] = sim

        for word in cands:
            consider(word)
        if not found and len(s) >= 7:
            # Two typos in a long word: stems sharing at least half of the query stem's trigrams.
            grams = set(trigrams(s))
            counts: dict[str, int] = {}
            for g in grams:
                for term in _set_items(self._tri, g):
                    counts[term] = counts.get(term, 0) + 1
            need = max(2, (len(grams) + 1) // 2)
            for term, c in counts.items():
                if c >= need and abs(len(term) - len(s)) <= 3:
                    consider(term)
        return sorted(found.items(), key=lambda x: (-x[1], x[0]))

    def _containing(self, base: str) -> list[tuple[str, float]]:
        """Catalogue stems that contain ``base`` (compounds), with a quality by length and position."""
        sets = []
        for g in set(trigrams(base)):
            items = self._tri.get(g)
            if items is None:
                return []
            sets.append(items if isinstance(items, set) else {items})
        sets.sort(key=len)
        common = set(sets[0])
        for other in sets[1:]:
            common &= other
            if not common:
                return []
        out = []
        for term in common:
            if term == base or base not in term:
                continue
            ratio = len(base) / len(term)
            if ratio < 0.3:
                continue
            if term.endswith(base):  # the head of a German compound: "Wohnsitzanmeldung" is an Anmeldung
                q = 0.5 + 0.4 * ratio
            elif term.startswith(base):
                q = 0.4 + 0.4 * ratio
            elif len(base) >= 5:
                q = 0.3 + 0.4 * ratio
            else:
                continue  # a short word inside another ("leid" in "Neueinkleidung") is mostly chance
            out.append((term, q))
        if len(out) > _MAX_CONTAINING:
            out = sorted(out, key=lambda x: (-x[1], x[0]))[:_MAX_CONTAINING]
        return out


class _Query:
    """The work of one :meth:`ServiceIndex.search`, in steps.

    Words are the query's content words (stems); each has expansions (catalogue terms with a quality)
    and an idf weight. Evidence is, per word, how well (0..1) a phrase or service explains it.
    """

    def __init__(
        self, index: ServiceIndex, words: list[str], expansions: list[tuple[tuple[str, float, bool, float], ...]]
    ):
        self.index = index
        self.allow: Allow | None = None
        self._allowed: dict[str, Any] = {}
        self.words = words
        self.expansions = expansions
        self.nwords = len(expansions)
        live = (len(index._groups) - len(index._free_gids)) or 1
        # idf uses the group count rounded to 1/16 of a power of two: cached idfs stay valid while the
        # catalogue grows or shrinks by a few percent, and the same catalogue always gets the same idfs.
        self.n = n = 2.0 ** (round(math.log2(live) * 16) / 16)
        if n != index._idf_n:
            index._idf.clear()
            index._idf_n = n
        log = math.log
        unknown_idf = _UNKNOWN_WORD * log(1.0 + n)
        self.idf_cache = index._idf
        self.evidence: dict[int, list[float]] = {}  # group → evidence, filled by score_groups
        self.coverage: dict[int, float] = {}  # group → share of its phrase the query explains
        hits: dict[str, list[tuple[int, float, bool, float]]] = {}  # term → [(word, quality, part, cover)]
        self.word_idf: list[float] = []
        # Whether the catalogue knows the word itself (a close expansion, not only compound parts).
        self.known: list[bool] = []
        for i, exp in enumerate(expansions):
            best_q, best_idf = 0.0, unknown_idf
            for term, qual, piece, cov in exp:
                hits.setdefault(term, []).append((i, qual, piece, cov))
                if not piece and qual > best_q:
                    best_q, best_idf = qual, self.idf(term)
            if best_q == 0.0 and exp:  # only compound parts: weigh by the rarest part
                best_idf = max(self.idf(t) for t, _q, _p, _c in exp)
            self.word_idf.append(best_idf)
            self.known.append(best_q >= _KNOWN_WORD)
        # term → (how well the term is matched, [(word, evidence)], [(word, share of the split word)],
        #         weight of the term for finding candidates)
        self.terms: dict[str, tuple[float, list[tuple[int, float]], list[tuple[int, float]], float]] = {}
        for term, th in hits.items():
            best = max(qual for _i, qual, _p, _c in th)
            covered = sum(cov for _i, _q, _p, cov in th)
            alts: dict[int, float] = {}
            pieces = []
            for i, qual, piece, cov in th:
                if piece:
                    pieces.append((i, qual))
                    continue
                if cov and covered > best:
                    # Query words that together make up a catalogue compound ("Wohnsitz anmelden" for
                    # "Wohnsitzanmeldung"): the compound is matched as far as they cover it, and each of
                    # those words is explained as well as the whole.
                    qual = max(qual, min(covered, 1.0))
                if qual > alts.get(i, 0.0):
                    alts[i] = qual
            weight = max(self.word_idf[i] * qual for i, qual, _p, _c in th)
            self.terms[term] = (max(best, min(covered, 1.0)), list(alts.items()), pieces, weight)
        self.total_idf = sum(self.word_idf) or 1.0

    def idf(self, term: str) -> float:
        v = self.idf_cache.get(term)
        if v is None:
            p = self.index._post.get(term)
            v = self.idf_cache[term] = math.log(1.0 + self.n / len(p)) if p else 0.0
        return v

    def candidates(self) -> list[int]:
        """Groups sharing a term with the query, best guesses first; rare terms open candidates.

        With a place filter only groups the place may see count. The filter is asked as late as possible:
        terms are accumulated for every group, and only the groups that would be returned (and, once, whether
        any group found so far is visible, which decides if a common term may still open candidates) are
        checked; a visible group's weight does not depend on the invisible ones, so the outcome is that of
        filtering every posting, at a fraction of the checks (a national catalogue shows a place most groups).
        """
        post = self.index._post
        common = max(256, self.n // 50)
        acc: dict[int, float] = {}
        filtered = self.allow is not None
        opened = False  # whether acc holds a group the place may see (with a filter)
        for term in sorted(self.terms, key=lambda t: len(post.get(t, ()))):
            p = post.get(term)
            if not p:
                continue
            w = self.terms[term][3]
            if len(p) > common and acc and not opened and filtered:
                opened = any(self.group_allowed(gid) for gid in acc)
            if len(p) > common and acc and (opened or not filtered):
                # A very common term only adds to what is found already.
                if len(acc) < len(p):
                    for gid in acc:
                        if gid in p:
                            acc[gid] += w
                else:
                    for gid in p:
                        if gid in acc:
                            acc[gid] += w
            else:
                get = acc.get
                for gid in p:
                    acc[gid] = get(gid, 0.0) + w
        groups = self.index._groups
        if not filtered:
            if len(acc) <= _MAX_CANDIDATES:
                return list(acc)
            ranked = heapq.nlargest(_MAX_CANDIDATES, [(v * groups[g].rank_factor, g) for g, v in acc.items()])
            return [g for _v, g in ranked]
        if len(acc) <= _MAX_CANDIDATES:
            return [g for g in acc if self.group_allowed(g)]
        # The best visible groups, when more than the maximum are visible; else all visible, as found.
        order = [(v * groups[g].rank_factor, g) for g, v in acc.items()]
        ranked = heapq.nlargest(2 * _MAX_CANDIDATES, order)
        if len(ranked) < len(order):
            ranked.append((-math.inf, -1))  # a marker: the rest is sorted only when needed
        best: list[int] = []
        for n, (_v, g) in enumerate(ranked):
            if g < 0:
                ranked[n:] = sorted(order, reverse=True)[n:]
                g = ranked[n][1]
            if self.group_allowed(g):
                best.append(g)
                if len(best) > _MAX_CANDIDATES:
                    return best[:_MAX_CANDIDATES]
        visible = set(best)
        return [g for g in acc if g in visible]

    def score_groups(self, gids: list[int]) -> list[tuple[float, int, float, list[float]]]:
        """``(score, group, query coverage, evidence)`` per group, best first.

        Score = how much of the phrase the query explains (idf-weighted, pc) and how much of the query
        the phrase explains (qc), half and half.
        """
        groups = self.index._groups
        terms = self.terms
        idf, idf_get = self.idf, self.idf_cache.get
        nwords = self.nwords
        rows: list[tuple[int, float, list[float]]] = []
        explained = [0.0] * nwords
        object_cover: dict[int, float] = {}
        for gid in gids:
            alt = [0.0] * nwords
            parts: list[float] | None = None
            got = tot = 0.0
            ogot = otot = 0.0  # the same over the phrase's object words (not its actions): Hit.coverage
            for s in groups[gid].stems:
                t_idf = idf_get(s)
                if t_idf is None:
                    t_idf = idf(s)
                tot += t_idf
                is_object = s not in ACTION_STEMS
                if is_object:
                    otot += t_idf
                info = terms.get(s)
                if info is not None:
                    got += t_idf * info[0]
                    if is_object:
                        ogot += t_idf * info[0]
                    for i, e in info[1]:
                        if e > alt[i]:
                            alt[i] = e
                    if info[2]:
                        if parts is None:
                            parts = [0.0] * nwords
                        for i, share in info[2]:
                            parts[i] += share
            if parts is not None:
                alt = [a if a > b else min(b, 1.0) for a, b in zip(alt, parts, strict=True)]
            for i, e in enumerate(alt):
                if e > explained[i]:
                    explained[i] = e
            rows.append((gid, got / tot if tot else 0.0, alt))
            object_cover[gid] = ogot / otot if otot else (got / tot if tot else 0.0)
        # Query coverage counts a word as far as *some* phrase of the catalogue explains it: words that
        # nothing explains ("Mallorca", "übermorgen") are the same for every service and would only
        # dilute the score of a long sentence.
        wi = self.word_idf
        self.total_idf = total = sum(w * max(e * e, _UNEXPLAINED) for e, w in zip(explained, wi, strict=True)) or 1.0
        scored = []
        for gid, pc, evidence in rows:
            qc = min(1.0, sum(e * w for e, w in zip(evidence, wi, strict=True)) / total)
            scored.append((_PC_WEIGHT * pc + (1.0 - _PC_WEIGHT) * qc, gid, qc, evidence))
        scored.sort(key=itemgetter(0), reverse=True)
        self.evidence = {gid: evidence for _s, gid, _qc, evidence in scored}
        # "Kirchenaustritt" explains all of "Kirchenaustritt erklären" that names a thing; "helfen" little of
        # "Hilfe zur Pflege" (the too-general rule of knowledge.clarify reads this).
        self.coverage = object_cover
        return scored

    def group_allowed(self, gid: int) -> bool:
        """Whether some document may be found through this group's phrase (the place filter)."""
        group = self.index._groups[gid]
        stems = group.stems
        cache, allow = self._allowed, self.allow
        for doc_id, _w, _n in group.members.values():
            a = cache.get(doc_id, _UNSEEN)
            if a is _UNSEEN:
                a = cache[doc_id] = allow(doc_id)  # type: ignore[misc]
            if a is True or (a is not None and stems in a):
                return True
        return False

    def allowed(self, doc_id: str, stems: tuple[str, ...] | None) -> bool:
        """Whether the filter lets this document be found (through this phrase, when ``stems``)."""
        cache = self._allowed
        a = cache.get(doc_id, _UNSEEN)
        if a is _UNSEEN:
            a = cache[doc_id] = self.allow(doc_id)  # type: ignore[misc]
        if a is None:
            return False
        return a is True or stems is None or stems in a

    def collect_docs(self, scored: list[tuple[float, int, float, list[float]]], pool_size: int) -> dict[str, list]:
        """Service id → [best phrase score, its phrase id, its query coverage, score of the name].

        Groups come best first, so once enough services are found, a group whose score cannot get a new
        service among the best ``pool_size`` ends the walk.
        """
        groups = self.index._groups
        docs: dict[str, list] = {}
        get = docs.get
        visits = 0
        bar = -1.0
        allow, cache = self.allow, self._allowed
        for base, gid, qc, _evidence in scored:
            if base + _NAME_BONUS < bar:
                break
            if bar < 0.0 and len(docs) >= 4 * pool_size:
                bar = heapq.nlargest(pool_size, [d[0] + _NAME_BONUS * d[3] for d in docs.values()])[-1]
                if base + _NAME_BONUS < bar:
                    break
            group = groups[gid]
            members = group.members
            stems = group.stems
            for pid, (doc_id, weight, is_name) in members.items():
                if allow is not None:
                    a = cache.get(doc_id, _UNSEEN)
                    if a is _UNSEEN:
                        a = cache[doc_id] = allow(doc_id)
                    if not (a is True or (a is not None and stems in a)):
                        continue
                d = get(doc_id)
                if d is None:
                    docs[doc_id] = [weight * base, pid, qc, base if is_name else 0.0]
                else:
                    if weight * base > d[0]:
                        d[0], d[1], d[2] = weight * base, pid, qc
                    if is_name:
                        d[3] = base
            visits += len(members)
            if visits >= _MAX_VISITS:
                break
        return docs

    def rank(self, docs: dict[str, list], limit: int, pool_size: int) -> list[Hit]:
        """The best services: a little more for query words their other phrases or their context explain,
        and for a name that relates to the query when a synonym matched best (breaks ties between services
        sharing a synonym)."""
        index = self.index
        ctx_post = index._ctx_post
        ctx_terms = [
            frozenset(t for t in (word, *(t for t, _q, piece, _c in exp if not piece)) if t in ctx_post)
            for word, exp in zip(self.words, self.expansions, strict=True)
        ]
        any_ctx = any(ctx_terms)
        if not docs and any_ctx:
            # Nothing in any name or synonym: the topic and description are the only evidence.
            common = max(1024, self.n // 10)
            found: set[str] = set()
            for ts in ctx_terms:
                for t in ts:
                    if len(ctx_post[t]) <= common:
                        found.update(ctx_post[t])
            if self.allow is not None:
                found = {d for d in found if self.allowed(d, None)}
            docs = {doc_id: [0.0, -1, 0.0, 0.0] for doc_id in found}
        if len(docs) > pool_size:
            best = heapq.nlargest(pool_size, [(d[0] + _NAME_BONUS * d[3], doc_id) for doc_id, d in docs.items()])
            pool = [(doc_id, docs[doc_id]) for _s, doc_id in best]
        else:
            pool = list(docs.items())
        phrases = index._phrases
        group_evidence = self.evidence
        wi, total = self.word_idf, self.total_idf
        results: list[tuple[float, str, str, tuple[str, ...], float, int, list[float]]] = []
        qtext = " ".join(self.words)
        groups = index._groups
        for doc_id, (score, pid, qc, name_base) in pool:
            entry = index._entries[doc_id]
            evidence = [0.0] * self.nwords
            for gid in entry.gids:
                ev = group_evidence.get(gid)  # only the scored groups (a Leistung has hundreds of phrases)
                if ev is not None and (self.allow is None or self.allowed(doc_id, groups[gid].stems)):
                    evidence = [a if a > b else b for a, b in zip(evidence, ev, strict=True)]
            if any_ctx:
                context = entry.context
                for i, ts in enumerate(ctx_terms):
                    if evidence[i] < _CONTEXT_WEIGHT and ts and not context.isdisjoint(ts):
                        evidence[i] = _CONTEXT_WEIGHT
            words = sum(1 for e in evidence if e >= _WORD_EXPLAINED)
            qc_all = min(1.0, sum(e * w for e, w in zip(evidence, wi, strict=True)) / total)
            stems: tuple[str, ...] = ()
            coverage = 0.0
            if pid < 0:
                raw, matched = _CONTEXT_ONLY_CAP * qc_all, entry.doc.name
            else:
                raw = score + _NAME_BONUS * name_base + _EXTRA_BONUS * max(0.0, qc_all - qc)
                phrase = phrases[pid]
                raw += _RF_WEIGHT / 100.0 * token_sort_ratio(qtext, " ".join(groups[phrase.gid].stems))
                matched = phrase.text
                stems = groups[phrase.gid].stems
                coverage = self.coverage.get(phrase.gid, 0.0)
            if raw > 0.0:
                results.append((raw, doc_id, matched, stems, coverage, words, evidence))
        # Ties go by the documents' ``order`` (a Leistung's is its widest text's id), then id.
        entries = index._entries
        results.sort(key=lambda x: (-x[0], entries[x[1]].doc.order or x[1], x[1]))
        qwords, known = self.words, self.known
        return [Hit(d, round(100.0 * min(raw, 1.0), 1), m, st, round(cov, 3), n,
                    tuple(w for w, e in zip(qwords, ev, strict=True) if e >= _WORD_EXPLAINED),
                    tuple(w for w, e, k in zip(qwords, ev, known, strict=True) if k and e < _WORD_MISSED))
                for raw, d, m, st, cov, n, ev in results[:limit]]


def doc_from_service(service: Service) -> SearchDoc:
    """The searchable part of a :class:`knowledge.models.Service`."""
    text = service.short_text or (service.full_text or "")[:600]
    topic = " ".join(x for x in (service.topic, service.life_situation) if x)
    return SearchDoc(
        id=service.id,
        name=service.name,
        synonyms=list(service.synonyms or ()),
        text=text,
        topic=topic,
        leika=service.leika,
    )
