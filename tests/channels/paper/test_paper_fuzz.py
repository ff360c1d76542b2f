"""Property tests of the paper code payload (the reliability issue's fuzzing, for the paper channel).

Whatever text a scanner decodes from a page (noise, another vendor's code, a code of ours altered byte by
byte, a forged one), :func:`channels.paper.code.decode` answers with a :class:`FormCode` or one of its typed
errors, which the ingest turns into a rejection with a reason; never any other exception.
"""

from __future__ import annotations

import paper_support as P
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.paper.code import CodeError, b45decode, b45encode, decode, encode

KEY = P.KEY.encode()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_GOOD = None


def good_code() -> str:
    global _GOOD
    if _GOOD is None:
        _GOOD = encode(P.make_form().code, KEY)
    return _GOOD


@FAST
@given(st.text(max_size=600))
def test_any_text_is_a_code_or_a_typed_error(text):
    try:
        decode(text, [KEY])
    except CodeError:
        pass


@FAST
@given(st.binary(min_size=1, max_size=400))
def test_any_base45_payload_is_a_code_or_a_typed_error(raw):
    try:
        decode(b45encode(raw), [KEY])
    except CodeError:
        pass


@FAST
@given(st.data())
def test_a_code_of_ours_changed_anywhere_is_refused_with_a_reason(data):
    raw = bytearray(b45decode(good_code()))
    i = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    raw[i] ^= flip
    try:
        decode(b45encode(bytes(raw)), [KEY])
    except CodeError as exc:
        assert str(exc)
    else:
        raise AssertionError(f"a code changed at byte {i} was accepted")


def test_the_unchanged_code_decodes():
    assert decode(good_code(), [KEY]).form_id
