"""German-aware features of a citizen's text: word stems, stem bigrams, compound parts, character n-grams.

Citizens write "Laterne vor Haus 12 ist aus", "Straßenlaterne defekt", "Lampe kaputt": the same service
with different words, compounds and spellings. Three kinds of features cover that:

* ``w:<stem>`` – content words, folded and stemmed with the catalogue's own stemmer
  (:func:`knowledge.text.stem`), so "Laternen" and "Laterne" are one feature;
* ``b:<stem> <stem>`` – neighbouring content stems ("glas scherb", "ohne kennzeich");
* ``p:<stem>`` – the parts of a compound the vocabulary knows ("strassenlatern" → "strass", "latern"),
  so a compound seen only once still shares evidence with its parts;
* ``<n-gram>`` (no prefix: an n-gram never holds a colon) – character n-grams of 2..5 inside word boundaries (scikit-learn's ``char_wb``), which
  catch typos, inflections and compounds that no rule knows ("Sperrmüllhaufen", "Schlagloch").

Numbers carry no hint about the service (house numbers, dates) and become one token ``0``.

Weighting is tf-idf with sublinear tf; the word block and the character block are each scaled to unit
length and then mixed (``word_weight``), and the whole vector is unit length again. Training and routing
go through the same :meth:`Featurizer.transform`, a plain dictionary lookup per feature, so routing one
request costs tens of microseconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
from scipy import sparse

from knowledge.text import STOPWORDS, split_compound, stem, tokenize

__all__ = ["Featurizer", "analyze"]

MAX_TOKENS = 200  # a long mail is judged by its beginning: that is where citizens say what is wrong
CHAR_MIN, CHAR_MAX = 2, 5
_COMPOUND_MIN = 9  # shorter words are rarely compounds worth splitting
_TOKEN_CACHE = 200_000


@lru_cache(maxsize=65536)
def _char_grams(token: str) -> tuple[str, ...]:
    """The character n-grams of one token (``char_wb``: padded with a space each side). Tokens repeat
    across requests, so they are cut once."""
    padded = f" {token} "
    n = len(padded)
    return tuple(padded[i : i + size] for size in range(CHAR_MIN, CHAR_MAX + 1) for i in range(n - size + 1))


def analyze(text: str, stems: frozenset[str] = frozenset(), chars: bool = True
            ) -> tuple[dict[str, float], Counter[str]]:
    """Raw counts of the word block and the character block of ``text`` (empty with ``chars=False``).

    ``stems`` is the known vocabulary of word stems; compounds are split into its parts.
    """
    tokens = ["0" if t.isdigit() else t for t in tokenize(text)[:MAX_TOKENS]]
    words: dict[str, float] = {}
    grams: Counter[str] = Counter()
    previous: str | None = None
    for token in tokens:
        if chars:
            grams.update(_char_grams(token))
        if token in STOPWORDS or token == "0":
            previous = None
            continue
        s = stem(token)
        key = "w:" + s
        words[key] = words.get(key, 0.0) + 1.0
        if previous is not None:
            key = f"b:{previous} {s}"
            words[key] = words.get(key, 0.0) + 1.0
        previous = s
        if len(s) >= _COMPOUND_MIN and stems:
            for part in _split(s, stems):
                key = "p:" + part
                words[key] = words.get(key, 0.0) + 1.0
    return words, grams


@lru_cache(maxsize=65536)
def _split(word: str, stems: frozenset[str]) -> tuple[str, ...]:
    return tuple(split_compound(word, stems) or ())


class Featurizer:
    """A fixed vocabulary with idf weights: text → one unit-length sparse row.

    Built from training texts by :meth:`fit`; stored as plain lists and arrays (:meth:`state`,
    :meth:`from_state`), never pickled.
    """

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, stems: Iterable[str],
                 word_weight: float = 1.0) -> None:
        self.vocabulary = vocabulary
        self.idf = np.asarray(idf, dtype=np.float32)
        self.stems = frozenset(stems)
        self.word_weight = float(word_weight)
        # Per token, the vocabulary columns of its character n-grams: routing looks up a token once, not
        # each of its ~20 n-grams. Bounded: a flood of new words cannot grow it without limit.
        self._token_cols: dict[str, np.ndarray] = {}

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    @classmethod
    def fit(cls, texts: Sequence[str], *, min_df: int = 2, word_weight: float = 1.0,
            extra_stems: Iterable[str] = ()) -> Featurizer:
        """Vocabulary of every feature in at least ``min_df`` texts (a word one citizen wrote once — a
        name, a street — is no evidence for a service and is not kept in the model)."""
        return cls.fit_transform(texts, min_df=min_df, word_weight=word_weight, extra_stems=extra_stems)[0]

    @classmethod
    def fit_transform(cls, texts: Sequence[str], *, min_df: int = 2, word_weight: float = 1.0,
                      extra_stems: Iterable[str] = (), char_min_df: int | None = None
                      ) -> tuple[Featurizer, sparse.csr_matrix]:
        """:meth:`fit` and the rows of ``texts``, analysing each text once."""
        stems: set[str] = set(extra_stems)
        for text in texts:
            stems.update(stem(t) for t in tokenize(text)[:MAX_TOKENS] if t not in STOPWORDS and not t.isdigit())
        known = frozenset(s for s in stems if len(s) >= 4)
        df: Counter[str] = Counter()
        analyses = [analyze(text, known) for text in texts]
        for words, chars in analyses:
            df.update(words.keys())
            df.update(chars.keys())
        char_min = min_df if char_min_df is None else char_min_df
        keys = sorted(k for k, n in df.items() if n >= (min_df if ":" in k else char_min))
        n = len(texts)
        idf = np.array([math.log((1 + n) / (1 + df[k])) + 1.0 for k in keys], dtype=np.float32)
        featurizer = cls({k: i for i, k in enumerate(keys)}, idf, known, word_weight)
        return featurizer, featurizer._rows(analyses)

    def _weighted(self, counts: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        vocab = self.vocabulary
        pairs = [(j, tf) for key, tf in counts.items() if (j := vocab.get(key)) is not None]
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        cols = np.fromiter((j for j, _ in pairs), dtype=np.int64, count=len(pairs))
        tf = np.fromiter((t for _, t in pairs), dtype=np.float32, count=len(pairs))
        vals = (1.0 + np.log(tf)) * self.idf[cols]
        norm = float(np.sqrt(np.dot(vals, vals)))
        if norm > 0:
            vals /= norm
        return cols, vals

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(columns, values)`` of the unit-length feature vector of ``text``.

        The same numbers as :meth:`transform` (which counts n-grams per text); here the character block
        is built from cached per-token columns.
        """
        words, _chars = analyze(text, self.stems, chars=False)
        wc, wv = self._weighted(words)
        cache, vocab = self._token_cols, self.vocabulary
        parts = []
        for token in ["0" if t.isdigit() else t for t in tokenize(text)[:MAX_TOKENS]]:
            cols = cache.get(token)
            if cols is None:
                cols = np.array([j for g in _char_grams(token) if (j := vocab.get(g)) is not None], dtype=np.int64)
                if len(cache) < _TOKEN_CACHE:
                    cache[token] = cols
            parts.append(cols)
        if parts:
            cc, tf = np.unique(np.concatenate(parts), return_counts=True)
        else:
            cc, tf = np.zeros(0, dtype=np.int64), np.zeros(0)
        cv = (1.0 + np.log(tf.astype(np.float32))) * self.idf[cc]
        norm = float(np.sqrt(np.dot(cv, cv)))
        if norm > 0:
            cv /= norm
        vals = np.concatenate([wv * self.word_weight, cv]).astype(np.float32)
        norm = float(np.sqrt(np.dot(vals, vals)))
        if norm > 0:
            vals /= norm
        return np.concatenate([wc, cc]), vals

    def _vector(self, words: dict[str, float], chars: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        wc, wv = self._weighted(words)
        cc, cv = self._weighted(chars)
        vals = np.concatenate([wv * self.word_weight, cv])
        norm = float(np.sqrt(np.dot(vals, vals)))
        if norm > 0:
            vals /= norm
        return np.concatenate([wc, cc]), vals

    def transform(self, texts: Iterable[str]) -> sparse.csr_matrix:
        """One row per text (CSR, float32)."""
        return self._rows(analyze(text, self.stems) for text in texts)

    def _rows(self, analyses: Iterable[tuple[dict[str, float], dict[str, float]]]) -> sparse.csr_matrix:
        indptr = [0]
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for words, chars in analyses:
            c, v = self._vector(words, chars)
            cols.append(c)
            vals.append(v)
            indptr.append(indptr[-1] + len(c))
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        val = np.concatenate(vals) if vals else np.zeros(0, dtype=np.float32)
        return sparse.csr_matrix((val, col, np.array(indptr)), shape=(len(indptr) - 1, self.n_features),
                                 dtype=np.float32)

    # -- persistence (plain data) ----------------------------------------------------------------

    def state(self) -> dict:
        keys = [""] * len(self.vocabulary)
        for k, i in self.vocabulary.items():
            keys[i] = k
        return {"features": keys, "stems": sorted(self.stems), "word_weight": self.word_weight}

    @classmethod
    def from_state(cls, state: dict, idf: np.ndarray) -> Featurizer:
        keys = state["features"]
        if len(keys) != len(idf):
            raise ValueError("vocabulary and idf differ in length")
        return cls({k: i for i, k in enumerate(keys)}, idf, state["stems"], state.get("word_weight", 1.0))
