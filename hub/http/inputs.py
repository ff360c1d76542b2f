"""Untrusted request input, read the same way by every route: bounded integers and strict JSON.

**Integers.** Every integer a client puts into a query string or a path goes through :func:`int_param`
(or :func:`path_id`): ASCII digits only (``str.isdigit`` takes ``"²"``, which ``int()`` then refuses),
within the bounds the route names. Anything else is :class:`BadParameter`, which the app's error handler
turns into 400 with the message (:func:`hub.http.app.error_middleware`; Open311 answers it in its own
error list). Before, ``GET /api/cases?page=2**62`` overflowed SQLite's 64-bit integers into a 500.

**JSON.** :func:`strict_loads` is the one strict JSON decoder of the hub, used by the catalogue API and
by ``POST /api/requests``: UTF-8, standard JSON, no duplicate keys (``json.loads`` keeps the last one,
so ``{"text": "harmless", "text": "..."}`` would mean whatever the last writer wanted), no NaN or
Infinity, no integers of more than 20 digits (``int()`` on huge digit strings is slow, CVE-2020-10735).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Ids are INTEGER columns: 32 bits on PostgreSQL. A larger id cannot exist.
MAX_ID = 2**31 - 1
#: Pages of a list: far more than any list has, far less than what overflows an OFFSET.
MAX_PAGE = 100_000
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


class BadParameter(ValueError):
    """A query or path parameter is not an acceptable integer; the message says which and why (HTTP 400)."""

    status = 400


def int_param(raw: str | None, name: str, *, minimum: int = 0, maximum: int, default: int | None = None) -> int:
    """``raw`` as an integer within ``minimum``–``maximum``; ``default`` when it is missing or empty."""
    value = (raw or "").strip()
    if not value:
        if default is None:
            raise BadParameter(f"'{name}' fehlt")
        return default
    if not _INTEGER.fullmatch(value):
        raise BadParameter(f"'{name}' muss eine ganze Zahl von {minimum} bis {maximum} sein")
    number = int(value)
    if not minimum <= number <= maximum:
        raise BadParameter(f"'{name}' muss eine ganze Zahl von {minimum} bis {maximum} sein")
    return number


def path_id(raw: str, name: str = "id") -> int:
    """An id from a path (``/api/cases/{case_id}``): 1 to :data:`MAX_ID`."""
    return int_param(raw, name, minimum=1, maximum=MAX_ID)


# -- strict JSON ------------------------------------------------------------------------------------------


class StrictJsonError(ValueError):
    """The body is not JSON we accept; the message says why (never quoting the body beyond a plain key)."""


class _Hostile(ValueError):
    """A construct json.loads would accept but a body must not contain."""


_MAX_INT_DIGITS = 20
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,40}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            shown = f" {key!r}" if _PLAIN_KEY.fullmatch(key) else ""
            raise _Hostile(f"der Schlüssel{shown} kommt in einem Objekt zweimal vor")
        out[key] = value
    return out


def _int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Hostile(f"eine Zahl hat mehr als {_MAX_INT_DIGITS} Ziffern")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Hostile("eine Zahl liegt außerhalb des Wertebereichs")
    return value


def _constant(text: str) -> Any:
    raise _Hostile(f"{text} ist kein JSON")


def strict_loads(raw: bytes) -> Any:
    """Parse a body strictly: UTF-8, standard JSON, no duplicate keys, no NaN, no giant numbers.

    Every refusal is a :class:`StrictJsonError` whose message says why.
    """
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except UnicodeDecodeError as exc:
        message = f"Der Inhalt ist kein UTF-8 (Byte {exc.start})"
    except json.JSONDecodeError as exc:
        message = f"Der Inhalt ist kein gültiges JSON: Zeile {exc.lineno}, Spalte {exc.colno} ({exc.msg})"
    except _Hostile as exc:
        message = f"Der Inhalt ist kein annehmbares JSON: {exc}"
    except RecursionError:  # json.loads recurses once per level: "[[[[…" a few thousand deep
        message = "Der Inhalt ist zu tief verschachtelt"
    except ValueError as exc:  # anything else json.loads may raise on hostile input
        message = f"Der Inhalt ist kein gültiges JSON ({type(exc).__name__})"
    raise StrictJsonError(message)


# A member name in key position: after "{" or "," (and JSON white space), a string, then ":". Inside a
# string every quote is escaped, so this never starts inside a string; the names it finds include every
# real member name, written as the raw bytes between its quotes.
_MEMBER_NAME = re.compile(rb'[{,][ \t\r\n]*"((?:[^"\\]|\\.)*)"[ \t\r\n]*:')


def may_have_duplicate_keys(raw: bytes) -> bool:
    """False only when ``raw`` certainly has no duplicate key in any object; True means "decode strictly".

    A cheap pre-check for hot paths that parse with a faster, non-strict parser (pydantic's): a name
    seen twice anywhere (perhaps legitimately, in two different objects) or a name written with an
    escape (``"\\u0074ext"`` is ``"text"``) sends the body to :func:`strict_loads`, which decides.
    """
    names = _MEMBER_NAME.findall(raw)
    return len(names) != len(set(names)) or any(b"\\" in name for name in names)
