"""Federation tree paths, subtree rules, emails and passwords: pure rules."""

from __future__ import annotations

import pytest
from gateway import domain
from gateway.security import hash_password, needs_rehash, verify_password
from support import make_identity
from tribune_shared.auth import Role
from tribune_shared.errors import Forbidden, InvalidField


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


# ---------------------------------------------------------------- who may make a DPO

NATIONAL_ADMIN = make_identity("/root/", Role.admin)
FEDERATION_ADMIN = make_identity("/root/paris/", Role.admin)
DPO = make_identity("/root/paris/", Role.dpo)


def account(role: str, active: bool = True) -> dict:
    return {"_id": "u1", "role": role, "active": active}


@pytest.mark.parametrize(
    ("target", "change", "grants"),
    [
        (None, {"role": Role.dpo}, True),  # creating a DPO
        (None, {"role": Role.admin}, False),
        (account("viewer"), {"role": Role.dpo}, True),  # promoting
        (account("dpo"), {"role": Role.dpo}, False),  # already one
        (account("dpo"), {"role": Role.viewer}, False),  # demoting takes powers away
        (account("dpo"), {"active": False}, False),
        (account("dpo", active=False), {"active": True}, True),  # reactivating a DPO
        (account("viewer", active=False), {"active": True}, False),
        (account("viewer", active=False), {"active": True, "role": Role.dpo}, True),
        (account("dpo"), {"password": True}, True),  # setting a DPO's password
        (account("admin"), {"password": True}, False),
    ],
)
def test_what_grants_dpo_powers(target, change, grants):
    assert domain.grants_dpo(target, **change) is grants


def test_only_a_dpo_or_a_national_administrator_may_grant_the_dpo_role():
    domain.check_account_change(NATIONAL_ADMIN, grants=True, dpo_only=True)
    domain.check_account_change(DPO, grants=True, dpo_only=True)
    with pytest.raises(Forbidden):
        domain.check_account_change(FEDERATION_ADMIN, grants=True, dpo_only=True)
    # administrators manage the other accounts; a DPO does nothing else with accounts
    domain.check_account_change(FEDERATION_ADMIN, grants=False, dpo_only=False)
    for change in ({"grants": False, "dpo_only": True}, {"grants": True, "dpo_only": False}):
        with pytest.raises(Forbidden):
            domain.check_account_change(DPO, **change)
    with pytest.raises(Forbidden):
        domain.check_account_change(
            make_identity("/root/", Role.secretary), grants=False, dpo_only=False
        )
    assert domain.is_root("/root/") and not domain.is_root("/root/paris/")
