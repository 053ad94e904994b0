"""Federation tree paths, subtree rules, emails and passwords: pure rules."""

from __future__ import annotations

import pytest
from gateway import domain
from gateway.security import hash_password, needs_rehash, verify_password
from tribune_shared.errors import InvalidField


def test_root_path_is_its_id_between_slashes():
    assert domain.federation_path(None, "abc") == "/abc/"


def test_child_path_extends_the_parent_path_with_a_trailing_slash():
    root = domain.federation_path(None, "r")
    child = domain.federation_path(root, "c")
    assert child == "/r/c/"
    assert domain.federation_path(child, "g") == "/r/c/g/"


def test_path_building_refuses_bad_ids_and_paths():
    with pytest.raises(ValueError):
        domain.federation_path(None, "")
    with pytest.raises(ValueError):
        domain.federation_path(None, "a/b")
    with pytest.raises(ValueError):
        domain.federation_path("/r", "c")  # parent path without trailing slash


def test_federation_ids_are_uuid4_hex_and_unique():
    ids = {domain.new_federation_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_subtree_includes_itself_and_descendants_only():
    assert domain.in_subtree("/r/a/", "/r/a/")
    assert domain.in_subtree("/r/a/", "/r/a/b/")
    assert not domain.in_subtree("/r/a/", "/r/")  # an ancestor is outside
    assert not domain.in_subtree("/r/a/", "/r/b/")  # a sibling is outside
    assert not domain.in_subtree("/r/a/", "/r/ab/")  # a prefix-sharing id is outside


def test_emails_are_normalised_and_bad_ones_refused_with_the_field():
    assert domain.normalize_email("  Jane.Doe@Example.ORG ") == "jane.doe@example.org"
    assert domain.normalize_email("admin@tribune.local") == "admin@tribune.local"
    for bad in ("", "jane", "jane@", "@example.org", "jane@example", "a b@example.org"):
        with pytest.raises(InvalidField) as err:
            domain.normalize_email(bad)
        assert err.value.field == "email"


def test_names_are_trimmed_and_sibling_keys_ignore_case_and_spacing():
    assert domain.normalize_name("  Paris   Centre ") == "Paris Centre"
    assert domain.name_key("Paris  Centre") == domain.name_key("paris centre")
    with pytest.raises(InvalidField):
        domain.normalize_name("   ")


def test_password_policy_uses_the_configured_minimum():
    domain.check_password("x" * 12, 12)
    with pytest.raises(InvalidField) as err:
        domain.check_password("x" * 11, 12)
    assert err.value.field == "password"
    assert "12" in err.value.message
    with pytest.raises(InvalidField):
        domain.check_password(" " * 20, 12)


def test_generated_passwords_are_long_and_different():
    a, b = domain.generate_password(), domain.generate_password()
    assert a != b
    assert len(a) >= 24


def test_password_hash_is_argon2id_salted_and_verifies_only_the_right_password():
    h1 = hash_password("correct horse battery")
    h2 = hash_password("correct horse battery")
    assert h1.startswith("$argon2id$")
    assert h1 != h2  # salted
    assert "correct horse battery" not in h1
    assert verify_password(h1, "correct horse battery")
    assert not verify_password(h1, "correct horse batterY")
    assert not needs_rehash(h1)


def test_verification_of_an_unknown_user_or_a_broken_hash_fails():
    assert not verify_password(None, "anything at all")
    assert not verify_password("not-a-hash", "anything at all")
