"""Use cases: a contact and its event commit together (transactional outbox)."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

from pymongo.errors import DuplicateKeyError, PyMongoError
from tribune_shared.auth import Identity
from tribune_shared.errors import Conflict, NotFound
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import ContactCreatedV1, DataOrigin
from tribune_shared.federations import FederationDirectory
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from contacts.domain import (
    Contact,
    ContactFields,
    ContactRules,
    InvalidFields,
    check_origin,
    decode_cursor,
    encode_cursor,
    new_contact_id,
    normalise_contact,
    normalise_tag,
    search_terms,
)
from contacts.settings import ContactsSettings
from contacts.store import ContactStore

log = get_logger(__name__)


def _now_ms() -> datetime:
    """Now, at the store's precision (BSON dates are milliseconds): what a create
    returns is exactly what a later read returns."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _duplicate(field: str, existing_id: str | None) -> Conflict:
    return Conflict(
        f"a contact with the same {field} already exists in this federation",
        existing_id=existing_id,
        conflicting_field=field,
    )


class ContactsService:
    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.contacts = ContactStore(store)
        self.outbox = Outbox(store)
        self.directory = FederationDirectory(store)
        self.rules = ContactRules(
            region=settings.default_region,
            max_name_length=settings.max_name_length,
            max_tags=settings.max_tags,
            max_tag_length=settings.max_tag_length,
        )

    async def create(
        self,
        identity: Identity,
        raw: ContactFields,
        origin: DataOrigin,
        federation_id: str | None = None,
    ) -> Contact:
        """Validate, place in a federation of the caller's subtree, refuse duplicates,
        store and emit contact-created, all or nothing."""
        fields = normalise_contact(raw, self.rules)
        now = _now_ms()
        check_origin(origin, now.date())
        fed_id, fed_path = await self.directory.resolve(identity, federation_id)
        contact = Contact(
            id=new_contact_id(),
            federation_id=fed_id,
            federation_path=fed_path,
            version=1,
            given_name=fields.given_name,
            family_name=fields.family_name,
            email=fields.email,
            phone=fields.phone,
            postcode=fields.postcode,
            tags=list(fields.tags),
            origin=origin,
            created_at=now,
            updated_at=now,
            created_by=identity.user_id,
        )
        event = new_envelope(
            ContactCreatedV1(contact_id=contact.id, contact_version=1, contact=contact.state()),
            producer=self.settings.service_name,
            federation_id=fed_id,
            federation_path=fed_path,
        )
        attempts = self.settings.transaction_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                async with self.store.transaction() as session:
                    existing = await self.contacts.find_duplicate(
                        fed_id, fields.email, fields.phone, session
                    )
                    if existing is not None:
                        raise _duplicate(*existing)
                    await self.contacts.insert(contact, session)
                    await self.outbox.add(session, event)
                return contact
            except DuplicateKeyError:
                # A concurrent create committed the same email/phone after our check:
                # the unique index refused ours; nothing of this request was written.
                existing = await self.contacts.find_duplicate(fed_id, fields.email, fields.phone)
                field, existing_id = existing or ("email or phone", None)
                raise _duplicate(field, existing_id) from None
            except PyMongoError as exc:
                if attempt < attempts and exc.has_error_label("TransientTransactionError"):
                    log.info("contacts.create_retried", attempt=attempt, error=str(exc)[:200])
                    backoff = self.settings.transaction_retry_backoff_seconds * attempt
                    await asyncio.sleep(backoff * (0.5 + random.random()))
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, identity: Identity, contact_id: str) -> Contact:
        contact = await self.contacts.get(identity, contact_id)
        if contact is None:
            raise NotFound("contact not found")
        return contact

    async def list_page(
        self,
        identity: Identity,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        q: str | None = None,
        tag: str | None = None,
    ) -> tuple[list[Contact], str | None]:
        """A page of the caller's subtree and the cursor of the next one (None at the end)."""
        limit = self.settings.default_page_size if limit is None else limit
        if not 1 <= limit <= self.settings.max_page_size:
            raise InvalidFields([("limit", f"must be between 1 and {self.settings.max_page_size}")])
        after = decode_cursor(cursor) if cursor is not None else None
        terms = (
            search_terms(q, self.settings.default_region, self.settings.max_search_words)
            if q is not None
            else None
        )
        if tag is not None:
            try:
                tag = normalise_tag(tag, self.settings.max_tag_length)
            except ValueError as exc:
                raise InvalidFields([("tag", str(exc))]) from None
        items, more = await self.contacts.page(
            identity, limit=limit, after=after, terms=terms, tag=tag
        )
        return items, encode_cursor(items[-1].id) if more else None
