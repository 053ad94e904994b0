"""Salted hashes of email addresses and phone numbers (the suppression list).

People who objected to everything or were erased must never be messaged or silently
re-imported, yet their address may not be kept in clear. Every service that needs to
recognise them keeps only ``address_hash(kind, value, salt)``: HMAC-SHA256 under a
platform secret (``TRIBUNE_SUPPRESSION_SALT``) of the normalised address, so the same
address gives the same hash in consent, contacts and messaging, and the hashes cannot be
reversed by hashing a list of known addresses without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import StrEnum


class AddressKind(StrEnum):
    email = "email"
    phone = "phone"


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_SEPARATORS = re.compile(r"[\s().-]")


def normalise_email(value: str) -> str:
    """Case and surrounding blanks never make two addresses different here."""
    value = value.strip().casefold()
    if "@" not in value:
        raise ValueError("not an email address")
    return value


def normalise_phone(value: str) -> str:
    """An E.164 number (``+33612345678``); separators are ignored, ``00`` means ``+``."""
    value = _PHONE_SEPARATORS.sub("", value.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    if not _E164.match(value):
        raise ValueError("not an E.164 phone number (+ and 7 to 15 digits)")
    return value


def address_hash(kind: AddressKind | str, value: str, salt: str) -> str:
    """Hex HMAC-SHA256 of ``"<kind>:<normalised value>"`` under ``salt``."""
    kind = AddressKind(kind)
    normalised = normalise_email(value) if kind is AddressKind.email else normalise_phone(value)
    message = f"{kind.value}:{normalised}".encode()
    return hmac.new(salt.encode(), message, hashlib.sha256).hexdigest()


def email_hash(value: str | None, salt: str) -> str | None:
    """The hash of an email address, or None if there is none (or it is unusable)."""
    if not value:
        return None
    try:
        return address_hash(AddressKind.email, value, salt)
    except ValueError:
        return None


def phone_hash(value: str | None, salt: str) -> str | None:
    """The hash of a phone number, or None if there is none (or it is not E.164)."""
    if not value:
        return None
    try:
        return address_hash(AddressKind.phone, value, salt)
    except ValueError:
        return None


__all__ = [
    "AddressKind",
    "address_hash",
    "email_hash",
    "normalise_email",
    "normalise_phone",
    "phone_hash",
]
