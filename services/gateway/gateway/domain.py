"""Gateway rules, free of I/O: the federation tree, accounts and emails."""

from __future__ import annotations

import re
import secrets
import uuid

from tribune_shared.errors import InvalidField

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
