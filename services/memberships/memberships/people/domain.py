"""The donor identity a tax receipt needs, projected from a contact event (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tribune_shared.contact_directory import tombstone
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ContactCreatedV1, ContactUpdatedV1
from tribune_shared.store import Projected


@dataclass(frozen=True)
class PersonIdentity:
    """A person's name and postal (tax) address, as the contacts service last described
    them. ``complete`` says whether a receipt can carry it as the law asks (a name and a
    full address)."""

    contact_id: str
    given_name: str = ""
    family_name: str = ""
    address_lines: tuple[str, ...] = ()
    postcode: str = ""
    commune: str = ""
    federation_id: str = ""
    federation_path: str = ""

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.given_name, self.family_name) if p)

    @property
    def complete(self) -> bool:
        return bool(self.family_name and self.address_lines and self.postcode and self.commune)

    def as_doc(self) -> dict[str, Any]:
        """The identity as a receipt keeps it (frozen at issue: a later move does not
        change a receipt already given)."""
        return {
            "given_name": self.given_name,
            "family_name": self.family_name,
            "address_lines": list(self.address_lines),
            "postcode": self.postcode,
            "commune": self.commune,
        }


def identity_state(envelope: Envelope) -> Projected:
    """The people projection's view of one contact event: only newer contact versions
    apply; an erased person's event (sealed fields unreadable) is a tombstone, so a late or
    replayed event never brings their name back."""
    event = decode_as(envelope, ContactCreatedV1, ContactUpdatedV1)
    if event.erased:
        return tombstone(event.contact_id)
    contact = event.contact
    address = contact.address
    return Projected(
        event.contact_id,
        event.contact_version,
        {
            "given_name": contact.given_name,
            "family_name": contact.family_name,
            "address_lines": list(address.lines) if address else [],
            # the address's postcode, else the contact's own (older events carry only it)
            "postcode": (address.postcode if address else None) or contact.postcode or "",
            "commune": (address.commune if address else None) or "",
            "federation_id": envelope.federation_id,
            "federation_path": envelope.federation_path,
        },
    )


def identity_from_doc(doc: dict[str, Any]) -> PersonIdentity:
    return PersonIdentity(
        contact_id=doc["_id"],
        given_name=doc.get("given_name") or "",
        family_name=doc.get("family_name") or "",
        address_lines=tuple(doc.get("address_lines") or ()),
        postcode=doc.get("postcode") or "",
        commune=doc.get("commune") or "",
        federation_id=doc.get("federation_id") or "",
        federation_path=doc.get("federation_path") or "",
    )
