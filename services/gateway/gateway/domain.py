"""Gateway rules, free of I/O: the federation tree, accounts and emails."""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Forbidden, InvalidField

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
MAX_EMAIL_LENGTH = 254


def new_federation_id() -> str:
    return uuid.uuid4().hex


def new_user_id() -> str:
    return uuid.uuid4().hex


def federation_path(parent_path: str | None, federation_id: str) -> str:
    """The tree path of a federation: ``/<root_id>/.../<id>/`` (always a trailing slash), so
    a subtree is one prefix query and ``/a/`` never matches ``/ab/``."""
    if not federation_id or "/" in federation_id:
        raise ValueError(f"invalid federation id {federation_id!r}")
    if parent_path is None:
        return f"/{federation_id}/"
    if not (parent_path.startswith("/") and parent_path.endswith("/")):
        raise ValueError(f"invalid parent path {parent_path!r}")
    return f"{parent_path}{federation_id}/"


def is_root(path: str) -> bool:
    """True for the root federation's path (``/<root_id>/``): its administrators are the
    national administrators."""
    return path.count("/") == 2


def in_subtree(ancestor_path: str, path: str) -> bool:
    """True if ``path`` is ``ancestor_path`` itself or below it."""
    return path.startswith(ancestor_path)


def normalize_email(value: str, field: str = "email") -> str:
    """Emails are identities: trimmed and lower-cased so one person has one account."""
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise InvalidField("not a valid email address", field=field)
    return email


def normalize_name(value: str, field: str = "name") -> str:
    name = " ".join(value.split())
    if not name:
        raise InvalidField("must not be blank", field=field)
    return name


def name_key(name: str) -> str:
    """Sibling federations may not share a name (case and spacing ignored)."""
    return " ".join(name.split()).casefold()


def check_password(password: str, min_length: int, field: str = "password") -> None:
    if len(password) < min_length:
        raise InvalidField(f"must have at least {min_length} characters", field=field)
    if not password.strip():
        raise InvalidField("must not be blank", field=field)


def generate_password() -> str:
    """A strong random password (about 190 bits) for the bootstrap administrator."""
    return secrets.token_urlsafe(24)


# ---------------------------------------------------------------- who may shape accounts


def may_grant_dpo(identity: Identity) -> bool:
    """The DPO reads the access audit and files erasures: only a DPO or a national
    administrator may make one (a federation administrator may not mint the person who
    audits them)."""
    return identity.role is Role.dpo or (
        identity.role is Role.admin and is_root(identity.federation_path)
    )


def grants_dpo(
    target: dict[str, Any] | None,
    *,
    role: Role | None = None,
    active: bool | None = None,
    password: bool = False,
) -> bool:
    """True if the change leaves somebody with DPO powers they did not have, or with a DPO
    account whose access the caller decides: creating a DPO (``target`` None), promoting
    a user to DPO, reactivating a DPO, setting a DPO's password."""
    if target is None:
        return role is Role.dpo
    was_dpo = target["role"] == Role.dpo.value
    if role is Role.dpo and not was_dpo:
        return True
    is_dpo = role is Role.dpo if role is not None else was_dpo
    return is_dpo and (password or (active is True and not target.get("active", False)))


def check_account_change(identity: Identity, *, grants: bool, dpo_only: bool) -> None:
    """Raises Forbidden unless ``identity`` may make this change to a user account.
    Administrators manage the accounts of their subtree; a DPO only grants the DPO role
    (``dpo_only``: the change does nothing else); granting it takes ``may_grant_dpo``."""
    if identity.role is Role.dpo:
        if not (grants and dpo_only):
            raise Forbidden("a DPO may only grant the DPO role")
    elif identity.role is not Role.admin:
        raise Forbidden(f"role {identity.role} may not manage users")
    if grants and not may_grant_dpo(identity):
        raise Forbidden(
            "only a DPO or a national administrator may grant the DPO role", field="role"
        )
