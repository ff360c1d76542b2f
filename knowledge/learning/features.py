"""German-aware features of a citizen's text: word stems, stem bigrams, compound parts, character n-grams.

Citizens write "Laterne vor Haus 12 ist aus", "Straßenlaterne defekt", "Lampe kaputt": the same service
with different words, compounds and spellings. Three kinds of features cover that:

* ``w:<stem>`` – content words, folded and stemmed with the catalogue's own stemmer
  (:func:`knowledge.text.stem`), so "Laternen" and "Laterne" are one feature;
* ``b:<stem> <stem>`` – neighbouring content stems ("glas scherb", "ohne kennzeich");
* ``p:<stem>`` – the parts of a compound the vocabulary knows ("strassenlatern" → "strass", "latern"),
  so a compound seen only once still shares evidence with its parts;
* ``c:<n-gram>`` – character n-grams of 2..5 inside word boundaries (scikit-learn's ``char_wb``), which
  catch typos, inflections and compounds that no rule knows ("Sperrmüllhaufen", "Schlagloch").

Numbers carry no hint about the service (house numbers, dates) and become one token ``0``.

Weighting is tf-idf with sublinear tf; the word block and the character block are each scaled to unit
length and then mixed (``word_weight``), and the whole vector is unit length again. Training and routing
go through the same :meth:`Featurizer.transform`, a plain dictionary lookup per feature, so routing one
request costs tens of microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import sparse

from knowledge.text import STOPWORDS, split_compound, stem, tokenize

__all__ = ["Featurizer", "analyze"]

MAX_TOKENS = 200  # a long mail is judged by its beginning: that is where citizens say what is wrong
CHAR_MIN, CHAR_MAX = 2, 5
_COMPOUND_MIN = 9  # shorter words are rarely compounds worth splitting


def _char_grams(token: str, out: dict[str, float]) -> None:
    padded = f" {token} "
    n = len(padded)
    for size in range(CHAR_MIN, CHAR_MAX + 1):
        for i in range(n - size + 1):
            key = "c:" + padded[i : i + size]
            out[key] = out.get(key, 0.0) + 1.0


def analyze(text: str, stems: frozenset[str] = frozenset()) -> tuple[dict[str, float], dict[str, float]]:
    """Raw counts of the word block and the character block of ``text``.

    ``stems`` is the known vocabulary of word stems; compounds are split into its parts.
    """
    tokens = ["0" if t.isdigit() else t for t in tokenize(text)[:MAX_TOKENS]]
    words: dict[str, float] = {}
    chars: dict[str, float] = {}
    previous: str | None = None
    for token in tokens:
        _char_grams(token, chars)
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
            for part in split_compound(s, stems) or ():
                key = "p:" + part
                words[key] = words.get(key, 0.0) + 1.0
    return words, chars


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

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    @classmethod
    def fit(cls, texts: Sequence[str], *, min_df: int = 2, word_weight: float = 1.0,
            extra_stems: Iterable[str] = ()) -> Featurizer:
        """Vocabulary of every feature in at least ``min_df`` texts (a word one citizen wrote once — a
        name, a street — is no evidence for a service and is not kept in the model)."""
        stems: set[str] = set(extra_stems)
        for text in texts:
            stems.update(stem(t) for t in tokenize(text)[:MAX_TOKENS] if t not in STOPWORDS and not t.isdigit())
        known = frozenset(s for s in stems if len(s) >= 4)
        df: dict[str, int] = {}
        for text in texts:
            words, chars = analyze(text, known)
            for key in (*words, *chars):
                df[key] = df.get(key, 0) + 1
        keys = sorted(k for k, n in df.items() if n >= min_df)
        n = len(texts)
        idf = np.array([math.log((1 + n) / (1 + df[k])) + 1.0 for k in keys], dtype=np.float32)
        return cls({k: i for i, k in enumerate(keys)}, idf, known, word_weight)

    def _weighted(self, counts: dict[str, float]) -> tuple[list[int], list[float]]:
        vocab, idf = self.vocabulary, self.idf
        cols: list[int] = []
        vals: list[float] = []
        for key, tf in counts.items():
            j = vocab.get(key)
            if j is not None:
                cols.append(j)
                vals.append((1.0 + math.log(tf)) * float(idf[j]))
        norm = math.sqrt(sum(v * v for v in vals))
        if norm > 0:
            vals = [v / norm for v in vals]
        return cols, vals

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(columns, values)`` of the unit-length feature vector of ``text``."""
        words, chars = analyze(text, self.stems)
        wc, wv = self._weighted(words)
        cc, cv = self._weighted(chars)
        w = self.word_weight
        vals = np.array([x * w for x in wv] + cv, dtype=np.float32)
        norm = float(np.sqrt(np.dot(vals, vals)))
        if norm > 0:
            vals /= norm
        return np.array(wc + cc, dtype=np.int64), vals

    def transform(self, texts: Iterable[str]) -> sparse.csr_matrix:
        """One row per text (CSR, float32)."""
        indptr = [0]
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for text in texts:
            c, v = self.vector(text)
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
