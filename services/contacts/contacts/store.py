"""All database access of the contacts service."""

from __future__ import annotations

import re
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.store import IndexSpec, Store

from contacts.domain import Contact, SearchTerms, search_keys

CONTACTS = "contacts"

EMAIL_UNIQUE = "contact_email_per_federation"
PHONE_UNIQUE = "contact_phone_per_federation"

INDEXES = [
    # Listing a subtree in id order (cursor pagination).
    IndexSpec(CONTACTS, [("federation_path", ASCENDING), ("_id", ASCENDING)]),
    # One contact per normalised email / phone in a federation; contacts without one
    # (no field stored) are not indexed, so any number of them may exist.
    IndexSpec(
        CONTACTS,
        [("federation_id", ASCENDING), ("email", ASCENDING)],
        {
            "name": EMAIL_UNIQUE,
            "unique": True,
            "partialFilterExpression": {"email": {"$type": "string"}},
        },
    ),
    IndexSpec(
        CONTACTS,
        [("federation_id", ASCENDING), ("phone", ASCENDING)],
        {
            "name": PHONE_UNIQUE,
            "unique": True,
            "partialFilterExpression": {"phone": {"$type": "string"}},
        },
    ),
    IndexSpec(CONTACTS, [("tags", ASCENDING), ("federation_path", ASCENDING)]),
    IndexSpec(CONTACTS, [("search.family", ASCENDING)]),
    IndexSpec(CONTACTS, [("search.email", ASCENDING)]),
]


def to_document(contact: Contact) -> dict[str, Any]:
    doc: dict[str, Any] = contact.model_dump(mode="python", exclude={"id", "origin"})
    doc["_id"] = contact.id
    # Dates are not BSON: the origin is stored in its JSON form.
    doc["origin"] = contact.origin.model_dump(mode="json")
    # Absent values are absent fields (the unique indexes only cover present ones).
    for name in ("email", "phone", "postcode"):
        if doc[name] is None:
            del doc[name]
    doc["search"] = search_keys(contact)
    return doc


def from_document(doc: dict[str, Any]) -> Contact:
    return Contact.model_validate(
        {
            **{k: v for k, v in doc.items() if k not in ("_id", "search")},
            "id": doc["_id"],
            "email": doc.get("email"),
            "phone": doc.get("phone"),
            "postcode": doc.get("postcode"),
        }
    )


def _prefix(value: str) -> dict[str, str]:
    """Anchored, escaped prefix match (on folded keys, so it is case-insensitive)."""
    return {"$regex": f"^{re.escape(value)}"}


def search_filter(terms: SearchTerms) -> dict[str, Any]:
    names = [
        {"$or": [{"search.given": _prefix(w)}, {"search.family": _prefix(w)}]}
        for w in terms.name_words
    ]
    alternatives: list[dict[str, Any]] = [
        names[0] if len(names) == 1 else {"$and": names},
        {"search.email": _prefix(terms.email_prefix)},
    ]
    if terms.phone_prefix:
        alternatives.append({"phone": _prefix(terms.phone_prefix)})
    return {"$or": alternatives}


class ContactStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def collection(self):
        return self.store[CONTACTS]

    async def insert(self, contact: Contact, session: AsyncClientSession) -> None:
        await self.collection.insert_one(to_document(contact), session=session)

    async def get(self, identity: Identity, contact_id: str) -> Contact | None:
        doc = await self.collection.find_one({"_id": contact_id, **identity.scope()})
        return from_document(doc) if doc else None

    async def find_duplicate(
        self,
        federation_id: str,
        email: str | None,
        phone: str | None,
        session: AsyncClientSession | None = None,
    ) -> tuple[str, str] | None:
        """(field, id) of a contact of the federation with the same email or phone."""
        wanted = [("email", email), ("phone", phone)]
        alternatives = [{name: value} for name, value in wanted if value]
        if not alternatives:
            return None
        docs = await self.collection.find(
            {"federation_id": federation_id, "$or": alternatives},
            {"email": 1, "phone": 1},
            session=session,
        ).to_list(2)
        for name, value in wanted:
            for doc in docs:
                if value and doc.get(name) == value:
                    return name, doc["_id"]
        return None

    async def page(
        self,
        identity: Identity,
        *,
        limit: int,
        after: str | None = None,
        terms: SearchTerms | None = None,
        tag: str | None = None,
    ) -> tuple[list[Contact], bool]:
        """Up to ``limit`` contacts of the caller's subtree in id order after ``after``;
        and whether more follow."""
        query: dict[str, Any] = {**identity.scope()}
        if after is not None:
            query["_id"] = {"$gt": after}
        if tag is not None:
            query["tags"] = tag
        if terms is not None:
            query.update(search_filter(terms))
        docs = await self.collection.find(query).sort("_id", ASCENDING).limit(limit + 1).to_list()
        return [from_document(d) for d in docs[:limit]], len(docs) > limit
