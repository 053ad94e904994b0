"""Suppression hashes: the same address gives the same hash everywhere (with the same
salt), the hash reveals nothing without the salt."""

from __future__ import annotations

import pytest
from tribune_shared.suppression import (
    AddressKind,
    address_hash,
    email_hash,
    normalise_phone,
    phone_hash,
)

SALT = "unit-test-suppression-salt-0123456789"


def test_case_and_blanks_do_not_make_two_emails_different():
    assert email_hash("  Marianne.Dupont@Example.FR ", SALT) == email_hash(
        "marianne.dupont@example.fr", SALT
    )
    assert email_hash("marianne@example.fr", SALT) != email_hash("marianne2@example.fr", SALT)


def test_the_hash_is_hex_sha256_and_does_not_contain_the_address():
    hashed = email_hash("marianne.dupont@example.fr", SALT)
    assert hashed is not None and len(hashed) == 64 and int(hashed, 16) >= 0
    assert "marianne" not in hashed


def test_another_salt_gives_another_hash():
    assert email_hash("a@example.fr", SALT) != email_hash("a@example.fr", SALT + "x")


def test_an_email_and_a_phone_never_share_a_hash():
    assert address_hash(AddressKind.email, "+33612345678@x.fr", SALT) != address_hash(
        AddressKind.phone, "+33612345678", SALT
    )


@pytest.mark.parametrize("written", ["+33612345678", "+33 6 12 34 56 78", "0033612345678"])
def test_phone_separators_and_00_prefix_are_ignored(written):
    assert phone_hash(written, SALT) == phone_hash("+33612345678", SALT)
    assert normalise_phone(written) == "+33612345678"


@pytest.mark.parametrize("value", [None, "", "not-an-email"])
def test_no_usable_email_has_no_hash(value):
    assert email_hash(value, SALT) is None


@pytest.mark.parametrize("value", [None, "", "0612345678", "+0612", "abc"])
def test_a_phone_that_is_not_e164_has_no_hash(value):
    assert phone_hash(value, SALT) is None
