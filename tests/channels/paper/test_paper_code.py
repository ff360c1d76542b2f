"""The form's 2D code: packing, signature, and the three ways a code can be bad."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date

import pytest

from channels.paper.code import (
    B45_ALPHABET,
    AlteredCode,
    CodeError,
    CodeTooLong,
    ForgedCode,
    FormCode,
    MalformedCode,
    Prefill,
    b45decode,
    b45encode,
    decode,
    encode,
    encode_fitting,
    new_form_id,
)
from channels.paper.forms import layout as L
from channels.paper.settings import PaperSettings
from knowledge.settings import ConfigError

KEY = b"k" * 32
OLD_KEY = b"o" * 32


def code(**changes) -> FormCode:
    values = dict(form_id="F-0123456789AB", service_id="sh-wohnsitz-anmelden", authority_id="amt-010605005",
                  location="010605005011", case_id=123456, case_token="Xk3f9Qm2LpA7vB1c", issued=date(2026, 11, 30),
                  prefill=Prefill(name="Hans-Jürgen Müller-Lüdenscheidt", address="Hauptstraße 117a\n24576 Hitzhusen",
                                  email="hj@example.org", phone="+4945511234"))
    values.update(changes)
    return FormCode(**values)


def test_rfc9285_vectors():
    for raw, text in ((b"AB", "BB8"), (b"Hello!!", "%69 VD92EX0"), (b"base-45", "UJCLQE7W581"), (b"ietf!", "QED8WEX0")):
        assert b45encode(raw) == text
        assert b45decode(text) == raw
    for bad in ("GGW", "a", "ZZZZ", ":/"):  # above 65535, lower case, a dangling character, above 255
        with pytest.raises(ValueError):
            b45decode(bad)


def test_round_trip_keeps_every_field():
    original = code()
    text = encode(original, KEY)
    assert set(text) <= set(B45_ALPHABET)  # the QR code's alphanumeric set: the compact mode
    assert decode(text, [KEY]) == original


def test_round_trip_without_case_or_prefill():
    original = code(case_id=None, case_token=None, prefill=Prefill(), location="")
    assert decode(encode(original, KEY), [KEY]) == original


def test_a_code_of_another_key_is_forged():
    text = encode(code(), OLD_KEY)
    with pytest.raises(ForgedCode) as info:
        decode(text, [KEY])
    assert info.value.kind == "forged" and "forged" in info.value.reason


def test_a_retired_key_still_verifies():
    text = encode(code(), OLD_KEY)
    assert decode(text, [KEY, OLD_KEY]).form_id == "F-0123456789AB"


def _raw(text: str) -> bytearray:
    return bytearray(b45decode(text))


def test_a_changed_body_is_altered():
    raw = _raw(encode(code(), KEY))
    raw[20] ^= 0x01  # one bit of the body
    with pytest.raises(AlteredCode) as info:
        decode(b45encode(bytes(raw)), [KEY])
    assert info.value.form_id == "F-0123456789AB" and "altered" in info.value.reason


def test_another_case_spliced_under_a_real_form_id_is_altered():
    # A citizen takes the header of a real code and signs nothing: the body now names another case.
    real = _raw(encode(code(), KEY))
    forged_body = _raw(encode(code(case_token="AAAAAAAAAAAAAAAA", case_id=1), OLD_KEY))
    spliced = real[:16] + forged_body[16:]
    with pytest.raises(AlteredCode):
        decode(b45encode(bytes(spliced)), [KEY])


def test_a_changed_form_id_is_forged():
    raw = _raw(encode(code(), KEY))
    raw[3] ^= 0x10
    with pytest.raises(ForgedCode):
        decode(b45encode(bytes(raw)), [KEY])


def test_a_cut_tag_is_not_accepted():
    raw = _raw(encode(code(), KEY))
    with pytest.raises(CodeError):
        decode(b45encode(bytes(raw[:-1])), [KEY])


@pytest.mark.parametrize("text", ["https://www.example.org/", "HELLO", "", "0" * 500, "WIFI:S:net;T:WPA;P:x;;"])
def test_other_qr_codes_are_malformed(text):
    with pytest.raises(MalformedCode) as info:
        decode(text, [KEY])
    assert "not a citizen-hub form code" in info.value.reason


def test_a_future_version_is_malformed():
    raw = _raw(encode(code(), KEY))
    raw[0] = 2
    with pytest.raises(MalformedCode):
        decode(b45encode(bytes(raw)), [KEY])


def test_random_codes_only_ever_raise_code_errors():
    rnd = random.Random(17)
    good = _raw(encode(code(), KEY))
    for _ in range(2000):
        sample = bytearray(good)
        for _ in range(rnd.randint(1, 6)):
            sample[rnd.randrange(len(sample))] = rnd.randrange(256)
        if rnd.random() < 0.2:
            sample = sample[: rnd.randrange(len(sample))]
        if sample == good:  # a "mutation" that wrote the same byte back
            continue
        with pytest.raises(CodeError):
            decode(b45encode(bytes(sample)), [KEY])


def _noise(n: int) -> str:
    """Text deflate cannot shrink."""
    rnd = random.Random(n)
    return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyzäöüß0123456789") for _ in range(n))


def test_the_full_prefill_fits_the_symbol_and_a_long_one_is_shed_in_order():
    text, used = encode_fitting(code(), KEY, L.QR_CAPACITY)
    assert len(text) <= L.QR_CAPACITY and used.prefill == code().prefill
    long = code(prefill=Prefill(name=_noise(200), address=_noise(200), email=_noise(60) + "@example.org",
                                phone="+49" + "1" * 12))
    text, used = encode_fitting(long, KEY, 300)
    assert len(text) <= 300
    assert used.prefill.phone == ""  # the phone goes first, the name last
    assert used.form_id == long.form_id and used.case_token == long.case_token


def test_a_code_that_cannot_fit_says_so():
    with pytest.raises(CodeTooLong):
        encode_fitting(code(service_id=_noise(400)), KEY, L.QR_CAPACITY)


def test_values_are_clipped_to_their_limits():
    long = code(prefill=Prefill(name="N" * 500))
    assert decode(encode(long, KEY), [KEY]).prefill.name == "N" * 80


def test_form_ids_are_random_and_well_formed():
    ids = {new_form_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("F-") and len(i) == 14 for i in ids)
    with pytest.raises(ValueError):
        encode(replace(code(), form_id="X-1"), KEY)


def test_settings_keys():
    with pytest.raises(ConfigError):
        PaperSettings().signing_key()
    with pytest.raises(ValueError):
        PaperSettings(hmac_key="short")
    s = PaperSettings(hmac_key="a" * 32, previous_hmac_keys="b" * 32 + "," + "c" * 40)
    assert s.verification_keys() == (b"a" * 32, b"b" * 32, b"c" * 40)
    with pytest.raises(ValueError):
        PaperSettings(min_dpi=400, max_dpi=300)
