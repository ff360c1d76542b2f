"""``POST /api/requests`` builds its request in one pydantic pass (``hub.http.api_cases._inbound``).

That pass must decide exactly as the general path (the body as ``RequestIn``, then an
``InboundRequest``): the same request for every body the general path accepts, and for every other
body the same error (status, message, fields). Each body here goes through both.
"""

from __future__ import annotations

import json
import random

import pytest

from hub.http.api_cases import (
    _API_CONTACT_FIELDS,
    _API_FIELDS,
    ApiError,
    ContactIn,
    RequestIn,
    _ApiInbound,
    _inbound,
    _inbound_general,
)
from hub.queue.requests import Contact, InboundRequest


def outcome(build, body: bytes):
    try:
        req = build(body)
    except ApiError as exc:
        return ("error", exc.status, str(exc), exc.extra)
    # received_at is the moment of building; everything else must be the same.
    return ("ok", req.model_dump(exclude={"received_at"}), req.received_at.tzinfo is not None)


def same(body: bytes) -> tuple:
    fast, general = outcome(_inbound, body), outcome(_inbound_general, body)
    assert fast == general, body[:200]
    return fast


def js(**fields) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


VALID = [
    js(channel="api", external_id="v-1", text="Ich möchte einen Reisepass beantragen.", location="Bad Segeberg",
       contact={"name": "Erika Musterfrau", "email": "Erika@Example.DE"}),
    js(external_id="v-2", text="no channel given: 'api' is the default"),
    js(channel="web", external_id="v-3", text="Zeile eins\nZeile zwei\r\n\tmit Tab", location=None),
    js(external_id="  v-4  ", text="  stripped id, text kept as written  "),
    js(external_id="v-5", text="Cafe\u0301 (NFD) becomes NFC", location="Mo\u0308lln",
       contact={"name": "Jo\u0308rg  ", "phone": "04551 / 12-34 56"}),
    js(external_id="v-6", text="x", contact={"name": "   ", "email": "  ", "phone": ""}),
    js(external_id="v-7", text="x", contact={}),
    js(external_id="v-8", text="x", contact={"name": None, "email": None, "phone": None}),
    js(external_id="v-9", text="emoji 🏠 and CJK 漢字 and RTL שלום"),
    js(external_id="v-10", text="x", location="  "),
    js(external_id="v-11", text="\u0958 expands under NFC"),
    js(external_id="v-12", text="x" * 100_000),
    js(external_id="i" * 255, text="longest id"),
    js(external_id="v-13", text="x", contact={"phone": "+49 4551 1234"}),
    js(external_id="v-14", text="x", contact={"phone": "0049 4551 1234"}),
    # a value that quotes a member name is no duplicate key
    js(external_id="v-15", text='she wrote {"text": "x", "text": "y"}, twice'),
    b'{"external_id": "v-15b", "text": "escapes in values", "contact": {"name": "J\\u00fcrgen"}}',
    b'{"external_id":"v-16","text":"\\u00e4 escaped","location":"K\\u00f6ln"}',
    js(external_id="v-17", text="x", contact={"email": "a.b+tag@sub.example.org"}),
]

HOSTILE = [
    # fields that InboundRequest has and the API contract does not
    js(external_id="h-1", text="x", subject="a subject"),
    js(external_id="h-2", text="x", subject=None),
    js(external_id="h-3", text="x", in_reply_to=["v-1"]),
    js(external_id="h-4", text="x", case_token="ABCD"),
    js(external_id="h-5", text="x", attachments=[{"filename": "a.txt", "data": "aGVsbG8="}]),
    js(external_id="h-6", text="x", received_at="2020-01-01T00:00:00Z"),
    js(external_id="h-7", text="x", raw_ref="/etc/passwd"),
    js(external_id="h-8", text="x", contact={"postal_address": "Hauptstr. 1"}),
    js(external_id="h-9", text="x", contact={"fax": "1"}),
    js(external_id="h-10", text="x", admin=True),
    # channels
    js(channel="email", external_id="h-11", text="x"),
    js(channel="API", external_id="h-12", text="x"),
    js(channel=None, external_id="h-13", text="x"),
    # blank, too long, wrong types
    js(external_id="h-14", text=""),
    js(external_id="h-15", text="   \n\t "),
    js(external_id="h-16", text="x" * 100_001),
    js(external_id="h-17", text="e\u0301" * 50_001),  # > 100,000 as sent, 50,001 after NFC
    js(external_id="", text="x"),
    js(external_id="   ", text="x"),
    js(external_id="i" * 256, text="x"),
    js(external_id=7, text="x"),
    js(external_id="h-18", text=["x"]),
    js(external_id="h-19", text="x", location="L" * 501),
    js(external_id="h-20", text="x", contact={"name": "N" * 501}),
    js(external_id="h-21", text="x", contact=None),
    js(external_id="h-22", text="x", contact="Erika"),
    js(external_id="h-23", text="x", contact={"email": "not-an-address"}),
    js(external_id="h-24", text="x", contact={"phone": "4551 1234"}),
    js(external_id="h-25", text="x", contact={"phone": "+49 abc"}),
    js(text="no id"),
    js(external_id="h-26"),
    # control characters, line breaks where one line is expected, lone surrogates
    js(external_id="h-27", text="NUL \x00 inside"),
    js(external_id="h-28", text="bell \x07"),
    js(external_id="h\n29", text="x"),
    js(external_id="h-30", text="x", location="two\nlines"),
    js(external_id="h-31", text="x", contact={"name": "Eve\r\nBcc: x@example.org"}),
    js(external_id="h-32", text="x\u0085next line"),
    b'{"external_id": "h-33", "text": "lone \\ud800 surrogate"}',
    b'{"external_id": "h-34\\udfff", "text": "x"}',
    # not JSON, not an object
    b"", b"null", b"[]", b'"text"', b"{", b'{"external_id": "h-35", "text": "x"} trailing',
    b"\xef\xbb\xbf" + js(external_id="h-36", text="BOM"), b"\xff\xfe\x00", b'{"external_id": "h-37", "text": NaN}',
    b'{"external_id": "h-38", "text": "x", "contact": {"name": {"$gt": ""}}}',
    # duplicate keys (issue 14): refused like the catalogue API refuses them, however they are spelled
    b'{"external_id": "h-39", "text": "harmless", "text": "second"}',
    b'{"external_id": "h-40", "text": "x", "\\u0074ext": "second"}',
    b'{"external_id": "h-41", "text": "x", "contact": {"email": "a@example.de", "email": "b@example.de"}}',
    b'{"external_id": "h-42", "external_id" : "h-43", "text": "x"}',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a": ' * 5_000 + b"1" + b"}" * 5_000,
]


@pytest.mark.parametrize("body", VALID, ids=lambda b: b[:30].decode(errors="replace"))
def test_valid_bodies_give_the_same_request_both_ways(body):
    result = same(body)
    assert result[0] == "ok"


@pytest.mark.parametrize("body", HOSTILE, ids=lambda b: b[:30].decode(errors="replace"))
def test_refused_bodies_give_the_same_error_both_ways(body):
    result = same(body)
    assert result[0] == "error" and result[1] in (400, 422)


def test_the_one_pass_takes_ordinary_bodies_and_leaves_the_others_to_the_general_path(monkeypatch):
    import hub.http.api_cases as api

    general = []
    real = api._inbound_general
    monkeypatch.setattr(api, "_inbound_general", lambda body: general.append(body) or real(body))
    for body in VALID:
        api._inbound(body)
    assert general == []  # no valid body needed the second way
    for body in (js(external_id="x-1", text="x", subject=None), js(external_id="x-2", text="x", contact={"fax": "1"})):
        with pytest.raises(ApiError):
            api._inbound(body)
    assert len(general) == 2
    # What the one pass returns is an InboundRequest, for the writer and every listener.
    assert isinstance(_inbound(VALID[0]), InboundRequest)


def test_the_contract_check_knows_every_field_of_the_api_body():
    assert _API_FIELDS == {"channel", "external_id", "text", "location", "contact"}
    assert _API_FIELDS <= set(InboundRequest.model_fields)
    assert _API_CONTACT_FIELDS == {"name", "email", "phone"} <= set(Contact.model_fields)
    assert set(ContactIn.model_fields) == _API_CONTACT_FIELDS and set(RequestIn.model_fields) == _API_FIELDS
    # The one-pass model carries RequestIn's limits on the fields whose limits differ.
    fast, api = _ApiInbound.model_json_schema()["properties"], RequestIn.model_json_schema()["properties"]
    for name in ("channel", "text", "external_id"):
        for limit in ("enum", "minLength", "maxLength", "default"):
            assert fast[name].get(limit) == api[name].get(limit), (name, limit)


#: Per field: values the API accepts, then values it refuses (alone or with the others).
PIECES = {
    "channel": (["api", "web"], ["", "sms", None, 1]),
    "external_id": (["r-{n}", " r-{n} ", "r-{n}" + "x" * 240], ["", "r\t{n}", "r-{n}" + "x" * 255, None, ["r"]]),
    "text": (["Reisepass", "Grüße\r\nÄmter", "a\u0301", "x" * 99_998 + "\u0301\u0301"],
             ["  ", "\x1b[31m", "e\u0301" * 50_001, 5]),
    "location": (["Bad Segeberg", " 23795 ", "", None, "L" * 500], ["a\nb", "L" * 501, {"ars": "01"}]),
    "contact": ([{"name": "Erika"}, {"email": "E@X.DE"}, {"phone": "0151 2345678"},
                 {"name": " ", "email": " ", "phone": " "}, {}, {"name": "\u202eevil"}],
                [{"email": "e@x"}, {"phone": "12"}, {"postal_address": "x"}, None]),
    "subject": ([], ["s", None]),
}


def test_random_bodies_built_from_hostile_pieces_agree():
    rng = random.Random(20261201)
    outcomes = {"ok": 0, "error": 0}
    for n in range(600):
        fields = {}
        for name, (good, bad) in PIECES.items():
            if name == "subject":
                if rng.random() < 0.05:
                    fields[name] = rng.choice(bad)
                continue
            if name not in ("external_id", "text") and rng.random() < 0.2:
                continue  # left out
            value = rng.choice(bad if rng.random() < 0.08 else good)
            fields[name] = value.format(n=n) if isinstance(value, str) and "{n}" in value else value
        outcomes[same(json.dumps(fields, ensure_ascii=rng.random() < 0.5).encode())[0]] += 1
    assert outcomes["ok"] > 100 and outcomes["error"] > 100  # both ways of the comparison were exercised


def test_json_nested_thousands_deep_is_a_400_that_says_so():
    for body in (b"[" * 10_000 + b"]" * 10_000, b'{"a": ' * 5_000 + b"1" + b"}" * 5_000):
        with pytest.raises(ApiError) as caught:
            _inbound(body)
        assert caught.value.status == 400 and "zu tief verschachtelt" in str(caught.value)
