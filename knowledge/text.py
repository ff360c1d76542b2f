"""Text normalisation for matching what citizens write against service names.

Everything that compares words goes through :func:`fold` first, so "Führerschein", "Fuehrerschein" and
"FÜHRERSCHEIN" are the same string, and through :func:`stem` second, so "anmelden", "Anmeldung" and
"Anmeldungen" are the same term. The stemmer is deliberately light (suffix stripping in the style of
Savoy's German light stemmer, which Lucene ships as ``GermanLightStemmer``): it has to be fast, stable for
typos and predictable, not linguistically complete. The same function runs on the catalogue and on the
query, so consistency matters more than correctness of the stem.

German compounds ("Wohnsitzanmeldung" vs "Wohnsitz anmelden") are handled by the search index with
:func:`split_compound` (query compound → known stems) and by substring lookups over character trigrams
(query word → catalogue compounds containing it); both helpers live here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Container, Iterator
from functools import lru_cache
from html.parser import HTMLParser

import nh3

__all__ = [
    "ACTION_STEMS",
    "ALLOWED_TAGS",
    "STOPWORDS",
    "analyze",
    "fold",
    "equivalents",
    "normalize",
    "query_terms",
    "safe_html",
    "split_compound",
    "stem",
    "terms",
    "tokenize",
    "trigrams",
]

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ẞ": "ss"})
# A token is a run of letters or digits in any script; everything else (punctuation, control characters,
# emoji, symbols) separates tokens.
_TOKEN = re.compile(r"[^\W_]+")

# Function words that carry no hint about *which* service is meant. Kept in folded form (ue, ss).
# Words that do matter even though they are common ("neu", "verloren", "kein") stay out: the index
# weighs common words down by their document frequency anyway.
STOPWORDS: frozenset[str] = frozenset(
    """
    ich du er sie es wir ihr man mich mir dich dir uns euch sich ihm ihn ihnen
    mein meine meinen meinem meiner meines dein deine deinen deinem deiner deines
    sein seine seinen seinem seiner seines unser unsere unseren unserem unserer euer eure
    ihre ihren ihrem ihrer ihres
    der die das den dem des ein eine einen einem einer eines dies diese dieser diesem diesen dieses
    und oder aber denn doch sondern sowie bzw
    wie was wo wann warum wieso weshalb wer wen wem wessen welche welcher welches welchen woher wohin
    kann koennen konnte koennte koennten muss muessen musste muesste soll sollen sollte will wollen
    wollte moechte moechten mag darf duerfen brauche brauchen braucht benoetige benoetigen
    bin bist ist sind seid war waren wird werden wurde wurden worden habe hast hat haben hatte hatten
    haette gibt gab geht ging tun tue mache machen macht lassen lasse laesst stellen stelle stellt gestellt
    bitte danke dank vielen hallo moin servus guten tag morgen abend gruss gruesse gruessen freundlichen
    freundliche lieben liebe beste besten mfg lg vg sehr geehrte geehrter damen herren frau herr
    heute gestern uebermorgen bald demnaechst naechste naechsten letzte letzten termin termine vereinbaren
    mit ohne fuer von vom zu zum zur im in ins an am auf aus bei beim nach vor ueber unter um durch gegen
    bis seit ab als wenn ob weil dass da hier dort jetzt nun schon noch auch nur mal so ja nein nicht
    gerne gern eigentlich mehr bereits etwa etwas viel viele alle alles jemand irgendwie
    leider einfach eventuell vielleicht wirklich genau gerade immer wieder ganz echt halt eben nochmal
    erstmal sowas irgendwas nichts dringend
    heisse heisst heissen hiess heiss namens nachname vorname
    i me my mine myself we us our you your he him his she her it its they them their
    the a an and or but if then than so to of for in on at by with from into about as
    how what where when why who whom which can could do does did done is am are was were be been being
    have has had having need needs want wants would like please hello hi thanks thank get got this that
    these those there here some any just also not no yes dear
    s t d m ll ve re
    """.split()
)


def fold(text: str) -> str:
    """Lower-case, transliterate umlauts and ß (ü→ue, ß→ss) and drop other diacritics (é→e).

    Never raises on odd input: unpaired surrogates become "?" (a token separator).
    """
    if not text:
        return ""
    if not text.isascii():
        # NFC first so a decomposed "u + combining diaeresis" becomes "ü" and transliterates to "ue".
        text = unicodedata.normalize("NFC", text)
        text = text.lower().translate(_FOLD)
        if not text.isascii():
            text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
            text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates → "?"
        return text
    return text.lower()


def tokenize(text: str) -> list[str]:
    """Folded tokens of ``text``: runs of letters or digits ("Teil B" keeps its "b")."""
    return _TOKEN.findall(fold(text))


def normalize(text: str) -> str:
    """Folded tokens joined by single spaces: the form that string-similarity scorers compare."""
    return " ".join(tokenize(text))


# "an|ge|meld" of "angemeldet": separable prefix, the participle's "ge", then a stem of 4+ letters.
_GE_PARTICIPLE = re.compile(r"(ab|an|auf|aus|bei|ein|fest|her|hin|mit|nach|um|vor|weg|zu|zurueck|)ge([a-z]{4,})$")


def _st_ending(ch: str) -> bool:
    return ch in "bdfghklmnt"


# Strong verbs whose participles citizens use all the time ("ich bin umgezogen", "Ausweis verloren") and
# that suffix stripping cannot bring together with the noun the catalogue uses (Umzug, Verlust). Keys are
# what the suffix rules below make of the word; values are the stem of the catalogue's noun.
_IRREGULAR = {
    "umgezog": "umzug", "umzieh": "umzug", "umzieht": "umzug", "umzog": "umzug",
    "gezog": "umzug", "hergezog": "umzug", "hingezog": "umzug",
    "weggezog": "wegzug", "wegzieh": "wegzug", "zugezog": "zuzug", "zuzieh": "zuzug",
    "eingezog": "einzug", "einzieh": "einzug", "ausgezog": "auszug", "auszieh": "auszug",
    "verlor": "verlust", "verli": "verlust",
    "gestohl": "diebstahl", "geklaut": "diebstahl", "bestohl": "diebstahl",
    "gebor": "geburt", "gestorb": "sterb", "verstorb": "sterb",
    "verheirat": "heirat", "geschied": "scheid", "gefund": "fund", "geparkt": "park",
}  # fmt: skip


@lru_cache(maxsize=131072)
def stem(token: str) -> str:
    """Light German stem of one *folded* token.

    >>> stem("anmeldung"), stem("anmelden"), stem("anmeldungen")
    ('anmeld', 'anmeld', 'anmeld')
    """
    s = _stem(token)
    return _IRREGULAR.get(s, s)


def _stem(token: str) -> str:
    n = len(token)
    if n <= 3 or not token.isalpha():
        return token
    # Nominalisations: Anmeldung(en) ↔ anmelden.
    if n >= 8 and token.endswith("ungen"):
        return token[:-5]
    if n >= 7 and token.endswith("ung"):
        return token[:-3]
    # Weak participles and 3rd person: (an)gemeldet → (an)meld, beantragt → beantrag, registriert → registri.
    if n > 6 and token.endswith("et"):
        m = _GE_PARTICIPLE.match(token, 0, n - 2)
        return m.group(1) + m.group(2) if m else token[:-2]
    if n > 5 and token.endswith("iert"):
        return token[:-3]
    if n > 5 and token.endswith("gt"):
        return token[:-1]
    # Savoy / Lucene GermanLightStemmer, step 1 and step 2.
    if n > 5 and token.endswith("ern"):
        n -= 3
    elif n > 4 and token[n - 2] == "e" and token[n - 1] in "mnrs":
        n -= 2
    elif n > 3 and token[n - 1] == "e":
        n -= 1
    elif n > 3 and token[n - 1] == "s" and _st_ending(token[n - 2]):
        n -= 1
    if n > 5 and token.endswith("est", 0, n):
        n -= 3
    elif n > 4 and token[n - 2] == "e" and token[n - 1] in "rn":
        n -= 2
    elif n > 4 and token.endswith("st", 0, n) and _st_ending(token[n - 3]):
        n -= 2
    return token[:n]


def terms(text: str) -> list[tuple[str, str]]:
    """``(surface, stem)`` for every content token of ``text``, stopwords removed, in order."""
    return [(t, stem(t)) for t in tokenize(text) if t not in STOPWORDS]


# Words of an administrative action rather than of its object ("beantragen", "Anmeldung", "Ersatz"), as
# :func:`analyze` stems them. Two service names that share only these are different services ("Hund
# anmelden", "Wohnsitz anmelden"); a request whose object no candidate explains is not understood
# (knowledge.clarify); the unexplained actions of a matched name do not make a request too general.
ACTION_STEMS = frozenset(
    """
    beantrag antrag anmeld anmeldung abmeld ummeld meld aender aenderung ausstell ausstellung erteil
    erteilung verlaenger verlaengerung neu erneuer ersatz verlust diebstahl umtausch umtausch auskunft
    bescheinig bestaetig genehmig erlaubnis registrier eintrag eintragung beantragung abgeb abgab
    anzeig einreich pruef zulass zulassung
    erkla festsetz antragstell umschreib abhol beglaubig reservi reservier ausgab kuendig erstatt bearbeit
    aend ersterteil verlaeng
    """.split()
)


def analyze(text: str) -> list[str]:
    """Stems of the content tokens of ``text``, in order (duplicates kept)."""
    return [stem(t) for t in tokenize(text) if t not in STOPWORDS]


# Words citizens and agents use for the same thing, where the catalogue often has only one of them in a
# given service ("kfz ummelden" for the "Auto ummelden" of a Halterwechsel; "Pkw abmelden"). Folded
# words; each group is one meaning. A query word stands for the others of its group at a slightly lower
# quality (ServiceIndex._expand), so a service that uses the word itself still ranks first.
_EQUIVALENT_GROUPS = (
    "kfz pkw auto fahrzeug kraftfahrzeug wagen",
    "motorrad kraftrad krad",
    "fuehrerschein fahrerlaubnis",
    "kennzeichen nummernschild",
    "muell abfall",
    "kita kindertagesstaette kindergarten",
    "perso personalausweis",
    "heirat hochzeit eheschliessung",
    "wohnung wohnsitz",
)
_EQUIVALENTS: dict[str, tuple[str, ...]] = {}
for _group in _EQUIVALENT_GROUPS:
    _stems = [stem(w) for w in _group.split()]
    for _s in _stems:
        _EQUIVALENTS[_s] = tuple(x for x in _stems if x != _s)


def equivalents(term: str) -> tuple[str, ...]:
    """Stems that mean the same as the stem ``term`` in a request (``kfz`` → ``pkw``, ``auto``, ``fahrzeug`` …)."""
    return _EQUIVALENTS.get(term, ())


# A person introducing themselves: what follows is their name, not a hint at a service ("Ich heiße
# Müller" is no Sperrmüll, "Frau Wald" no forest). The word before the name, folded.
_NAME_INTRO = frozenset({"heisse", "heisst", "heissen", "hiess", "namens", "herr", "herrn", "frau", "familie",
                         "fam", "nachname", "vorname", "nachnamen", "vornamen"})
_NAME_IS = frozenset({"name", "nachname", "vorname"})  # "mein Name ist X", "Name: X"
_RAW_TOKEN = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")


def _name_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of personal names a request introduces ("ich heiße Anna Schmidt, …", "Frau Meyer").

    After an introducing word, the next capitalised word is a name, and a second capitalised word too when
    the clause ends after it ("Anna Schmidt," / "Anna Schmidt."). Lower-case words are never taken: "Frau
    braucht einen Pass" stays as it is.
    """
    tokens = list(_RAW_TOKEN.finditer(text))
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        word = fold(tokens[i].group())
        start = i + 1
        introduces = False
        if word in _NAME_IS and start < len(tokens) and fold(tokens[start].group()) in ("ist", "lautet", "war"):
            start += 1
            introduces = True
        elif word in _NAME_IS and start < len(tokens) and text[tokens[i].end():tokens[start].start()].strip() == ":":
            introduces = True
        elif word not in _NAME_INTRO:
            i += 1
            continue
        if introduces and start < len(tokens) and tokens[start].group()[:1].isupper():
            spans.append((tokens[i].start(), tokens[i].end()))  # "Name" of "mein Name ist X" asks for nothing
        taken = 0
        for j in (start, start + 1):
            if j >= len(tokens) or not tokens[j].group()[:1].isupper():
                break
            if j == start + 1:
                after = text[tokens[j].end():tokens[j].end() + 2]
                if not (after == "" or after[:1] in ".,;!?" or tokens[j] is tokens[-1]):
                    break
            spans.append((tokens[j].start(), tokens[j].end()))
            taken += 1
        i = start + max(taken, 1)
    return spans


def query_terms(text: str) -> list[tuple[str, str]]:
    """:func:`terms` of what someone asks (a request, a search): personal names they introduce are left out.

    Only for queries: a catalogue text ("Namen ändern") is read with :func:`terms`.
    """
    spans = _name_spans(text) if text else []
    if spans:
        parts, last = [], 0
        for a, b in spans:
            parts.append(text[last:a])
            last = b
        parts.append(text[last:])
        text = " ".join(parts)
    return terms(text)


def trigrams(token: str) -> Iterator[str]:
    """Character trigrams of ``token`` without padding (a 2-letter token yields itself)."""
    if len(token) < 3:
        yield token
        return
    for i in range(len(token) - 2):
        yield token[i : i + 3]


def split_compound(token: str, vocabulary: Container[str], min_part: int = 4) -> list[str] | None:
    """Split a compound into known parts: ``"wohnsitzanmeld"`` → ``["wohnsitz", "anmeld"]``.

    Finds the non-overlapping parts (each in ``vocabulary``, each at least ``min_part`` characters)
    that cover the most characters of ``token``; characters between parts (linking elements like the
    "s" of "Geburtsurkunde") stay uncovered. Returns ``None`` unless at least two parts cover at least
    three quarters of the token.
    """
    n = len(token)
    if n < 2 * min_part or n > 64:
        return None
    # best[i] = (covered characters, -parts, parts) for the prefix token[:i]
    best: list[tuple[int, int, tuple[str, ...]]] = [(0, 0, ())] * (n + 1)
    for i in range(1, n + 1):
        cand = best[i - 1]  # character i-1 left uncovered
        for j in range(0, i - min_part + 1):
            if j == 0 and i == n:
                continue  # the whole token is not a split of itself
            piece = token[j:i]
            if piece in vocabulary:
                cov, neg_parts, parts = best[j]
                option = (cov + i - j, neg_parts - 1, (*parts, piece))
                if option[:2] > cand[:2]:
                    cand = option
        best[i] = cand
    covered, _neg, parts = best[n]
    if len(parts) < 2 or covered * 4 < n * 3:
        return None
    return list(parts)


# -- HTML fragments (catalogue texts, HTML that reaches a page as text) ------------------------------

_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_SKIP_TAGS = frozenset({"script", "style", "template", "head", "title", "noscript"})
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n- " if tag == "li" else "\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


#: The HTML a catalogue text may carry when it leaves the hub (Open311, the catalogue API, the lookup API):
#: the short list PVOG lets into the text modules of a Leistung (paragraphs, line breaks, lists, strong
#: and emphasis, links). Everything else goes: other tags (their text stays), every attribute but a link's
#: href, scripts and styles with their content, links other than http(s), mailto and tel.
ALLOWED_TAGS = frozenset({"p", "br", "ul", "ol", "li", "strong", "em", "a"})
ALLOWED_ATTRIBUTES = {"a": {"href"}}
ALLOWED_URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})


@lru_cache(maxsize=8192)
def safe_html(text: str) -> str:
    """A catalogue text cut down to :data:`ALLOWED_TAGS`, safe to hand to any outside client.

    Text without markup (no ``<``) is returned unchanged. HTML is cleaned by nh3 (the ammonia
    sanitiser: a real HTML5 parser, so malformed or nested tricks cannot smuggle a tag past it); links
    get ``rel="noopener noreferrer"``.
    """
    if not text or "<" not in text:
        return text
    return nh3.clean(text, tags=set(ALLOWED_TAGS), attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
                     url_schemes=set(ALLOWED_URL_SCHEMES), link_rel="noopener noreferrer")


def html_to_text(html: str | None) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, one line per block element.

    Only text is kept (no attributes, no scripts), so the result is safe to show as text anywhere.
    """
    if not html or not isinstance(html, str):
        return ""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # html.parser is lenient; should it still fail, keep the text without tags
        parser.parts = [re.sub(r"<[^>]*>", " ", html)]
    text = "".join(parser.parts).translate(_INVISIBLE).replace("\xa0", " ")
    lines = (" ".join(line.split()) for line in text.splitlines())
    out: list[str] = []
    for line in lines:
        if line and line != "-":
            out.append(line)
    return "\n".join(out)
