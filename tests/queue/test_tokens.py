"""Case tokens that can be read out on the phone: Crockford base32 in groups, typed any way, old ones still work."""

from __future__ import annotations

import re

import pytest

from hub.queue.cases import (
    CROCKFORD,
    new_case_token,
    normalise_token,
    subject_tag,
    token_in_subject,
    token_variants,
)

READABLE = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}")


def test_new_tokens_are_readable_groups_without_look_alikes():
    tokens = {new_case_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in tokens:
        assert READABLE.fullmatch(token), token
        assert not set(token) & set("ILOUilou_abcdefghijklmnopqrstuvwxyz")
    # every character of the alphabet turns up: the randomness is spread over all 32 symbols
    assert set("".join(tokens).replace("-", "")) == set(CROCKFORD)


@pytest.mark.parametrize("typed", [
    "K7QM-4XTR-9BQ2-H3ZP", "k7qm-4xtr-9bq2-h3zp", "K7QM4XTR9BQ2H3ZP", "k7qm 4xtr 9bq2 h3zp", " K7QM.4XTR.9BQ2.H3ZP ",
    "K7QM–4XTR–9BQ2–H3ZP",  # en dash, as phones and word processors write it
])
def test_hyphens_blanks_and_case_do_not_matter(typed):
    assert normalise_token(typed) == "K7QM-4XTR-9BQ2-H3ZP"
    assert token_variants(typed)[0] == "K7QM-4XTR-9BQ2-H3ZP"


def test_look_alikes_are_read_as_crockford_reads_them():
    assert normalise_token("OIL0-0000-0000-0000") == "0110-0000-0000-0000"
    assert normalise_token("oil0000000000000") == "0110-0000-0000-0000"


@pytest.mark.parametrize("bad", ["", "K7QM-4XTR-9BQ2", "K7QM-4XTR-9BQ2-H3ZPX", "U7QM-4XTR-9BQ2-H3ZP",
                                 "K7QM-4XTR-9BQ2-H3Z!", "x" * 10_000, "K7QM\x00-4XTR-9BQ2-H3ZP", None, 17])
def test_what_is_no_readable_token(bad):
    assert normalise_token(bad) is None


def test_old_tokens_are_still_accepted_exactly_as_they_were_issued():
    old = "aB3_x-Yz09QWerTy"  # secrets.token_urlsafe(12), the tokens issued before
    assert old in token_variants(old)
    assert token_variants(old.swapcase()) == (old.swapcase(),)  # case-sensitive, as always
    # an old token that happens to be made of Crockford letters only: both readings are asked
    assert token_variants("ABCDEFGHJKMNPQRS") == ("ABCD-EFGH-JKMN-PQRS", "ABCDEFGHJKMNPQRS")
    assert token_variants("no token at all") == ()
    assert token_variants("../../etc/passwd") == ()


def test_the_subject_tag_carries_new_and_old_tokens():
    token = new_case_token()
    assert token_in_subject(f"Re: Ihr Anliegen {subject_tag(token)}") == token
    assert token_in_subject("AW: [#aB3_x-Yz09QWerTy] Antwort") == "aB3_x-Yz09QWerTy"
    assert token_in_subject("[#zu kurz]") is None


def test_a_forked_process_does_not_hand_out_its_parents_next_tokens():
    """Tokens come from a block of random bytes per thread; a forked server process gets a block of its own."""
    import os

    new_case_token()  # the parent has a block now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tokens, then out without running the parent's clean-up
        os.write(write, " ".join(new_case_token() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    parent = {new_case_token() for _ in range(5)}
    assert len(child) == 5 and not child & parent
