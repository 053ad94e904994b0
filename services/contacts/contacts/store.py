"""All database access of the contacts service."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.outbox import Outbox
from tribune_shared.store import IndexSpec, Store, ancestor_paths, subtree_filter

from contacts.custom_fields import CustomFieldDefinition
from contacts.domain import Contact, SearchTerms, SortOrder, search_keys

CONTACTS = "contacts"
CUSTOM_FIELDS = "custom_field_definitions"
SEGMENTS = "segments"
EXPORTS = "contact_exports"
READ_COUNTERS = "contact_read_counters"

EMAIL_UNIQUE = "contact_email_per_federation"
PHONE_UNIQUE = "contact_phone_per_federation"
EMAILS_UNIQUE = "contact_emails_per_federation"
PHONES_UNIQUE = "contact_phones_per_federation"
CUSTOM_FIELD_UNIQUE = "custom_field_name_per_federation"
SEGMENT_UNIQUE = "segment_name_per_federation"

LOOKUP_INDEXES = [
    IndexSpec(CONTACTS, [(name, ASCENDING)], {"sparse": True})
    for name in ("emails.address", "email", "phone")
]

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
    # Every email and phone of a contact, not only the primary one (multikey: a value
    # may appear once per federation, across contacts).
    IndexSpec(
        CONTACTS,
        [("federation_id", ASCENDING), ("emails.address", ASCENDING)],
        {
            "name": EMAILS_UNIQUE,
            "unique": True,
            "partialFilterExpression": {"emails.address": {"$exists": True}},
        },
    ),
    IndexSpec(
        CONTACTS,
        [("federation_id", ASCENDING), ("phones.number", ASCENDING)],
        {
            "name": PHONES_UNIQUE,
            "unique": True,
            "partialFilterExpression": {"phones.number": {"$exists": True}},
        },
    ),
    # Duplicate lookups (``holders``): one field each, never beside federation_id (see
    # there). Sparse: only contacts with the field pay for it. phones.number is below.
    *LOOKUP_INDEXES,
    # List filters and segments (the subtree prefix is applied beside each).
    IndexSpec(CONTACTS, [("tags", ASCENDING), ("federation_path", ASCENDING)]),
    IndexSpec(CONTACTS, [("address.postcode", ASCENDING), ("federation_path", ASCENDING)]),
    IndexSpec(CONTACTS, [("address.commune_insee", ASCENDING), ("federation_path", ASCENDING)]),
    IndexSpec(CONTACTS, [("address.department", ASCENDING), ("federation_path", ASCENDING)]),
    IndexSpec(CONTACTS, [("constituency", ASCENDING), ("federation_path", ASCENDING)]),
    IndexSpec(CONTACTS, [("polling_station", ASCENDING), ("federation_path", ASCENDING)]),
    IndexSpec(CONTACTS, [("custom_fields.$**", ASCENDING)]),
    # Search (anchored prefixes of folded names/emails, E.164 prefixes).
    IndexSpec(CONTACTS, [("search.given", ASCENDING)]),
    IndexSpec(CONTACTS, [("search.emails", ASCENDING)]),
    IndexSpec(CONTACTS, [("phones.number", ASCENDING)]),
    # Sorted pages (sort key, then id: the cursor's order); updated_since uses the last.
    IndexSpec(CONTACTS, [("search.family", ASCENDING), ("_id", ASCENDING)]),
    IndexSpec(CONTACTS, [("created_at", ASCENDING), ("_id", ASCENDING)]),
    IndexSpec(CONTACTS, [("updated_at", ASCENDING), ("_id", ASCENDING)]),
    # Custom field definitions: one name per federation.
    IndexSpec(
        CUSTOM_FIELDS,
        [("federation_id", ASCENDING), ("name", ASCENDING)],
        {"name": CUSTOM_FIELD_UNIQUE, "unique": True},
    ),
    IndexSpec(CUSTOM_FIELDS, [("federation_path", ASCENDING), ("name", ASCENDING)]),
    # Segments: one name (case-insensitive) per federation; listed by subtree.
    IndexSpec(
        SEGMENTS,
        [("federation_id", ASCENDING), ("name_key", ASCENDING)],
        {"name": SEGMENT_UNIQUE, "unique": True},
    ),
    IndexSpec(SEGMENTS, [("federation_path", ASCENDING), ("_id", ASCENDING)]),
    # Export audit trail, by subtree and time.
    IndexSpec(EXPORTS, [("federation_path", ASCENDING), ("started_at", DESCENDING)]),
    # Bulk-read counters (one per user and time window): gone once the window is over.
    IndexSpec(READ_COUNTERS, [("expires_at", ASCENDING)], expire_after_seconds=0),
]

#: fields stored only when they have a value
_OPTIONAL = (
    "email",
    "phone",
    "address",
    "constituency",
    "polling_station",
    "birth_year",
    "updated_by",
)


def to_document(contact: Contact) -> dict[str, Any]:
    """The stored shape (the one ``contacts.filter_language`` queries): ``email`` and
    ``phone`` are the primary email and first phone (unique per federation, like every
    entry of ``emails``/``phones``); the postcode lives in ``address``."""
    doc: dict[str, Any] = contact.model_dump(mode="python", exclude={"id", "origin", "postcode"})
    doc["_id"] = contact.id
    # Dates are not BSON: the origin is stored in its JSON form.
    doc["origin"] = contact.origin.model_dump(mode="json")
    # Absent values are absent fields (the unique indexes only cover present ones).
    for name in _OPTIONAL:
        if doc[name] is None:
            del doc[name]
    doc["search"] = search_keys(contact)
    return doc


def from_document(doc: dict[str, Any]) -> Contact:
    """A stored contact (documents written before the full contact had only ``email``,
    ``phone`` and ``postcode``: they become the lists and the address)."""
    return Contact.model_validate(
        {**{k: v for k, v in doc.items() if k not in ("_id", "search")}, "id": doc["_id"]}
    )


def replacement_document(contact: Contact, original_doc: dict[str, Any]) -> dict[str, Any]:
    """The stored shape of a new version of a contact, keeping the fields of its document
    that are not the contact's own (e.g. ``import_ids``)."""
    managed = set(Contact.model_fields) | {"search", "_id"}
    doc = {k: v for k, v in original_doc.items() if k not in managed}
    doc.update(to_document(contact))
    return doc


def _prefix(value: str) -> dict[str, str]:
    """Anchored, escaped prefix match (on folded keys, so it is case-insensitive)."""
    return {"$regex": f"^{re.escape(value)}"}


def search_filter(terms: SearchTerms, *, names_only: bool = False) -> dict[str, Any]:
    """Names, email or phone prefixes; ``names_only`` for a caller who may not see emails
    and phones (a prefix search on them would reveal them: contacts.field_view)."""
    names = [
        {"$or": [{"search.given": _prefix(w)}, {"search.family": _prefix(w)}]}
        for w in terms.name_words
    ]
    by_name = names[0] if len(names) == 1 else {"$and": names}
    if names_only:
        return by_name
    alternatives: list[dict[str, Any]] = [
        by_name,
        {"search.emails": _prefix(terms.email_prefix)},
    ]
    if terms.phone_prefix:
        alternatives.append({"phones.number": _prefix(terms.phone_prefix)})
    return {"$or": alternatives}


def after_filter(order: SortOrder, value: Any, last_id: str) -> dict[str, Any]:
    """Contacts after (value, id) in ``order``: the next page."""
    op = "$lt" if order.descending else "$gt"
    if order.key == "id":
        return {"_id": {op: last_id}}
    return {"$or": [{order.field: {op: value}}, {order.field: value, "_id": {op: last_id}}]}


def _values(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [v for v in value if v]


#: what a duplicate lookup reads of each contact it finds
_KEYS_PROJECTION = {
    "federation_id": 1,
    "email": 1,
    "phone": 1,
    "emails.address": 1,
    "phones.number": 1,
}


def held_keys(doc: dict[str, Any]) -> set[str]:
    """Every email and phone a stored contact holds (the primary ones and the lists)."""
    keys = {doc.get("email"), doc.get("phone")}
    keys |= {e.get("address") for e in doc.get("emails") or ()}
    keys |= {p.get("number") for p in doc.get("phones") or ()}
    return {k for k in keys if k}


async def holders(
    collection,
    federation_id: str,
    values: Mapping[str, Sequence[str]],
    session: AsyncClientSession | None = None,
) -> list[dict[str, Any]]:
    """The federation's contacts holding one of the values in one of the fields (the
    ``_KEYS_PROJECTION`` of each, once): one query per field, on that field alone, each
    read through the field's own index (``LOOKUP_INDEXES``). The local store's planner
    scans the whole collection for a ``$or`` and for a field beside ``federation_id``
    (it tries the partial unique indexes, cannot prove their filter, and gives up): at
    92,000 contacts each lookup took 4-12 s under load, once per import batch and per
    form submission. The federation is therefore checked here (a value held in other
    federations costs a few documents read)."""
    found: dict[str, dict[str, Any]] = {}
    for name, wanted in values.items():
        if not wanted:
            continue
        cursor = collection.find({name: {"$in": list(wanted)}}, _KEYS_PROJECTION, session=session)
        async for doc in cursor:
            if doc.get("federation_id") == federation_id:
                found.setdefault(doc["_id"], doc)
    return list(found.values())


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
        email: str | Sequence[str] | None,
        phone: str | Sequence[str] | None,
        session: AsyncClientSession | None = None,
        *,
        exclude_id: str | None = None,
    ) -> tuple[str, str] | None:
        """(field, id) of a contact of the federation sharing one of the emails (field
        "email") or phones ("phone"); ``exclude_id`` is the contact being updated."""
        emails, phones = _values(email), _values(phone)
        if not emails and not phones:
            return None
        docs = await holders(
            self.collection,
            federation_id,
            {"emails.address": emails, "email": emails, "phones.number": phones, "phone": phones},
            session,
        )
        docs = [d for d in docs if d["_id"] != exclude_id]
        for name, wanted in (("email", emails), ("phone", phones)):
            for doc in docs:
                if held_keys(doc) & set(wanted):
                    return name, doc["_id"]
        return None

    async def get_in(
        self, scope: dict[str, Any], contact_id: str, session: AsyncClientSession | None = None
    ) -> Contact | None:
        doc = await self.collection.find_one({"_id": contact_id, **scope}, session=session)
        return from_document(doc) if doc else None

    async def replace(
        self, contact: Contact, expected_version: int, session: AsyncClientSession
    ) -> bool:
        """Store a new state if the stored one still has ``expected_version``. Fields the
        contact model does not hold (annotations such as the attendance summary of
        contacts.meetings, import ids) stay: an edit of the person does not drop them."""
        doc = to_document(contact)
        doc.pop("_id")
        update: dict[str, Any] = {"$set": doc}
        # what an absent value was (and the top-level postcode of documents written
        # before the full contact, which the address now holds) goes, as a replace did
        update["$unset"] = {name: "" for name in (*_OPTIONAL, "postcode") if name not in doc}
        result = await self.collection.update_one(
            {"_id": contact.id, "version": expected_version}, update, session=session
        )
        return result.matched_count == 1

    async def page(
        self,
        identity: Identity,
        *,
        limit: int,
        after: str | None = None,
        terms: SearchTerms | None = None,
        tag: str | None = None,
        scope: dict[str, Any] | None = None,
        conditions: Sequence[dict[str, Any]] = (),
        order: SortOrder | None = None,
        after_value: Any = None,
        names_only: bool = False,
    ) -> tuple[list[Contact], bool]:
        """Up to ``limit`` contacts of the scope (the caller's subtree by default) matching
        every condition, in ``order`` after (``after_value``, ``after``); and whether more
        follow."""
        order = order or SortOrder()
        clauses = list(conditions)
        if tag is not None:
            clauses.append({"tags": tag})
        if terms is not None:
            clauses.append(search_filter(terms, names_only=names_only))
        if after is not None:
            clauses.append(
                after_filter(order, after if after_value is None else after_value, after)
            )
        query = select(scope if scope is not None else identity.scope(), clauses)
        direction = DESCENDING if order.descending else ASCENDING
        sort = [(order.field, direction)] + ([] if order.key == "id" else [("_id", direction)])
        docs = await self.collection.find(query).sort(sort).limit(limit + 1).to_list()
        return [from_document(d) for d in docs[:limit]], len(docs) > limit

    async def count(self, scope: dict[str, Any], conditions: Sequence[dict[str, Any]]) -> int:
        return await self.collection.count_documents(select(scope, conditions))

    async def stream(
        self, scope: dict[str, Any], conditions: Sequence[dict[str, Any]], *, batch_size: int
    ) -> AsyncIterator[Contact]:
        """Every matching contact in id order, fetched ``batch_size`` at a time."""
        cursor = (
            self.collection.find(select(scope, conditions))
            .sort("_id", ASCENDING)
            .batch_size(batch_size)
        )
        async for doc in cursor:
            yield from_document(doc)

    async def with_custom_value(self, federation_path: str, name: str) -> int:
        """How many contacts of a subtree hold a value for a custom field."""
        return await self.collection.count_documents(
            {**subtree_filter(federation_path), f"custom_fields.{name}": {"$exists": True}}
        )


def select(scope: dict[str, Any], conditions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The scope (an anchored subtree prefix) and every condition."""
    conditions = [c for c in conditions if c]
    return {**scope, "$and": conditions} if conditions else dict(scope)


# ---------------------------------------------------------------- custom field definitions


def definition_from_document(doc: dict[str, Any]) -> CustomFieldDefinition:
    return CustomFieldDefinition.model_validate({**doc, "id": doc["_id"]})


class CustomFieldStore:
    def __init__(self, store: Store) -> None:
        self.collection = store[CUSTOM_FIELDS]

    async def insert(self, definition: CustomFieldDefinition) -> None:
        doc = definition.model_dump(mode="python", exclude={"id"})
        await self.collection.insert_one({"_id": definition.id, **doc})

    async def applicable(
        self, federation_path: str, session: AsyncClientSession | None = None
    ) -> dict[str, CustomFieldDefinition]:
        """The definitions a contact of that federation may carry (its own and its
        ancestors'), by name."""
        docs = await self.collection.find(
            {"federation_path": {"$in": ancestor_paths(federation_path)}}, session=session
        ).to_list()
        return {d["name"]: definition_from_document(d) for d in docs}

    async def visible(self, identity: Identity) -> list[CustomFieldDefinition]:
        """The caller's ancestors' definitions and those of its subtree."""
        query = {
            "$or": [
                {"federation_path": {"$in": ancestor_paths(identity.federation_path)}},
                identity.scope(),
            ]
        }
        docs = self.collection.find(query).sort([("federation_path", 1), ("name", 1)])
        return [definition_from_document(d) for d in await docs.to_list()]

    async def around(self, federation_path: str, name: str) -> CustomFieldDefinition | None:
        """A definition of ``name`` in the federation's ancestors or subtree (one name
        means one field along a branch of the tree)."""
        doc = await self.collection.find_one(
            {
                "name": name,
                "$or": [
                    {"federation_path": {"$in": ancestor_paths(federation_path)}},
                    subtree_filter(federation_path),
                ],
            }
        )
        return definition_from_document(doc) if doc else None

    async def count(self, federation_id: str) -> int:
        return await self.collection.count_documents({"federation_id": federation_id})

    async def get(self, identity: Identity, definition_id: str) -> CustomFieldDefinition | None:
        doc = await self.collection.find_one({"_id": definition_id, **identity.scope()})
        return definition_from_document(doc) if doc else None

    async def delete(self, definition_id: str) -> None:
        await self.collection.delete_one({"_id": definition_id})


# ---------------------------------------------------------------- segments


class SegmentStore:
    def __init__(self, store: Store) -> None:
        self.collection = store[SEGMENTS]

    async def insert(self, doc: dict[str, Any]) -> None:
        await self.collection.insert_one(doc)

    async def get(self, identity: Identity, segment_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": segment_id, **identity.scope()})

    async def page(
        self, identity: Identity, *, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        query: dict[str, Any] = {**identity.scope()}
        if after is not None:
            query["_id"] = {"$gt": after}
        docs = self.collection.find(query).sort("_id", ASCENDING).limit(limit + 1)
        found = await docs.to_list()
        return found[:limit], len(found) > limit

    async def count(self, federation_id: str) -> int:
        return await self.collection.count_documents({"federation_id": federation_id})

    async def replace(self, doc: dict[str, Any], expected_version: int) -> bool:
        result = await self.collection.replace_one(
            {"_id": doc["_id"], "version": expected_version}, doc
        )
        return result.matched_count == 1

    async def delete(self, segment_id: str) -> None:
        await self.collection.delete_one({"_id": segment_id})


# ---------------------------------------------------------------- export audit trail


class ExportAudit:
    def __init__(self, store: Store) -> None:
        self.collection = store[EXPORTS]

    async def started(self, record: dict[str, Any]) -> None:
        await self.collection.insert_one(record)

    async def finished(
        self, export_id: str, *, rows: int, status: str, finished_at: datetime
    ) -> None:
        await self.collection.update_one(
            {"_id": export_id},
            {"$set": {"row_count": rows, "status": status, "finished_at": finished_at}},
        )

    async def page(
        self, identity: Identity, *, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        query: dict[str, Any] = {**identity.scope()}
        if after is not None:
            query["_id"] = {"$lt": after}
        docs = self.collection.find(query).sort("_id", DESCENDING).limit(limit + 1)
        found = await docs.to_list()
        return found[:limit], len(found) > limit

    async def bulk_read(
        self,
        record_id: str,
        first: dict[str, Any],
        *,
        pages: int,
        rows: int,
        seen_at: datetime,
    ) -> None:
        """Create or bring up to date the trail entry of one user's bulk read in one time
        window (one atomic upsert; ``$max`` so concurrent pages never lower the totals)."""
        update = {
            "$setOnInsert": first,
            "$max": {
                "pages": pages,
                "row_count": rows,
                "expected_rows": rows,
                "finished_at": seen_at,
            },
        }
        await _upsert(self.collection, {"_id": record_id}, update)


# ---------------------------------------------------------------- bulk-read counters


class ReadCounters:
    """Per user and time window: how many pages and contacts were read (one atomic
    ``$inc`` per request, however many contacts it returned)."""

    def __init__(self, store: Store) -> None:
        self.collection = store[READ_COUNTERS]

    async def add(
        self,
        key: str,
        first: dict[str, Any],
        *,
        pages: int,
        contacts: int,
    ) -> tuple[int, int]:
        """Add to the counter ``key`` (made with ``first`` if new); its totals after."""
        update = {"$inc": {"pages": pages, "contacts": contacts}, "$setOnInsert": first}
        doc = await _upsert(self.collection, {"_id": key}, update, returning=True)
        assert doc is not None  # an upsert returning the document after always has one
        return int(doc["pages"]), int(doc["contacts"])


async def _upsert(
    collection: Any, query: dict[str, Any], update: dict[str, Any], *, returning: bool = False
) -> dict[str, Any] | None:
    """One upsert; two concurrent ones of a new _id may both try to insert, and the loser
    gets a duplicate key, or (returning) no document at all: run again, it then updates
    the winner's document."""
    for attempt in range(3):
        try:
            if returning:
                found = await collection.find_one_and_update(
                    query, update, upsert=True, return_document=ReturnDocument.AFTER
                )
                if found is not None or attempt == 2:
                    return found
                continue
            await collection.update_one(query, update, upsert=True)
            return None
        except DuplicateKeyError:
            if attempt == 2:
                raise
    return None  # pragma: no cover


# ================================================================ imports, duplicates, merges
# (CSV import jobs, their file chunks and rejected/flagged rows, the
# merge log; see contacts.import_jobs, contacts.merge_service)

IMPORTS = "contact_imports"
IMPORT_CHUNKS = "contact_import_chunks"
IMPORT_ROWS = "contact_import_rows"
MERGES = "contact_merges"

IMPORT_INDEXES = [
    IndexSpec(IMPORTS, [("federation_path", ASCENDING), ("_id", DESCENDING)]),
    # The worker's queue: queued jobs, and running ones whose lease expired.
    IndexSpec(IMPORTS, [("status", ASCENDING), ("lease_until", ASCENDING)]),
    IndexSpec(IMPORTS, [("expires_at", ASCENDING)], expire_after_seconds=0),
    # Chunks and rows have "<job>:<n>" ids (read in order through the _id index).
    IndexSpec(IMPORT_CHUNKS, [("expires_at", ASCENDING)], expire_after_seconds=0),
    IndexSpec(IMPORT_ROWS, [("expires_at", ASCENDING)], expire_after_seconds=0),
    IndexSpec(IMPORT_ROWS, [("contact_id", ASCENDING)]),  # erasure
    IndexSpec(MERGES, [("federation_path", ASCENDING), ("_id", DESCENDING)]),
    IndexSpec(MERGES, [("surviving_contact_id", ASCENDING)]),
    IndexSpec(MERGES, [("merged_contact_id", ASCENDING)]),
]
INDEXES.extend(IMPORT_INDEXES)


def id_range(prefix: str) -> dict[str, Any]:
    """Every ``<prefix>:<n>`` id (an _id index range)."""
    return {"$gte": f"{prefix}:", "$lt": f"{prefix};"}


class StaleContacts(Exception):
    """A contact an import batch merges into changed or vanished since it was read."""


class JobGone(Exception):
    """The job was cancelled, or another worker took it over (its lease expired)."""


class ImportStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.jobs = store[IMPORTS]
        self.chunks = store[IMPORT_CHUNKS]
        self.rows = store[IMPORT_ROWS]
        self.outbox = Outbox(store)
        self.contacts = store[CONTACTS]

    # ------------------------------------------------------------ jobs
    async def insert_job(self, doc: dict[str, Any]) -> None:
        await self.jobs.insert_one(doc)

    async def job(self, job_id: str, scope: dict[str, Any] | None = None) -> dict[str, Any] | None:
        return await self.jobs.find_one({"_id": job_id, **(scope or {})})

    async def jobs_page(
        self, scope: dict[str, Any], *, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        query: dict[str, Any] = dict(scope)
        if before is not None:
            query["_id"] = {"$lt": before}
        found = await self.jobs.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list()
        return found[:limit], len(found) > limit

    async def update_job(self, job_id: str, update: dict[str, Any], **conditions: Any) -> bool:
        result = await self.jobs.update_one({"_id": job_id, **conditions}, update)
        return result.matched_count == 1

    async def request_cancel(
        self, job_id: str, now: datetime, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        """A queued job is cancelled at once; a running one when its runner next looks
        (between batches). Returns the job as it is now."""
        await self.jobs.update_one(
            {"_id": job_id, "status": "queued"},
            {"$set": {"status": "cancelled", "finished_at": now, "cancel_requested": True}},
            session=session,
        )
        return await self.jobs.find_one_and_update(
            {"_id": job_id, "status": {"$in": ["running", "queued"]}},
            {"$set": {"cancel_requested": True}},
            return_document=ReturnDocument.AFTER,
            session=session,
        ) or await self.jobs.find_one({"_id": job_id}, session=session)

    async def claim(
        self, owner: str, now: datetime, lease_until: datetime
    ) -> dict[str, Any] | None:
        """Take the oldest queued job, or a running one whose runner stopped renewing
        its lease (crashed): it resumes after its last committed batch."""
        return await self.jobs.find_one_and_update(
            {
                "$or": [
                    {"status": "queued"},
                    {"status": "running", "lease_until": {"$lt": now}},
                ],
                "source": "upload",
            },
            {"$set": {"status": "running", "owner": owner, "lease_until": lease_until}},
            sort=[("_id", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )

    # ------------------------------------------------------------ file chunks
    async def put_chunk(self, job_id: str, n: int, data: bytes, expires_at: datetime) -> None:
        await self.chunks.insert_one(
            {
                "_id": f"{job_id}:{n:06d}",
                "job_id": job_id,
                "n": n,
                "data": data,
                "expires_at": expires_at,
            }
        )

    async def chunk(self, job_id: str, n: int) -> bytes | None:
        doc = await self.chunks.find_one({"_id": f"{job_id}:{n:06d}"})
        return bytes(doc["data"]) if doc else None

    async def drop_chunks(self, job_id: str) -> None:
        await self.chunks.delete_many({"_id": id_range(job_id)})

    # ------------------------------------------------------------ rejected / flagged rows
    async def issues(self, job_id: str, kind: str, batch_size: int = 1000):
        cursor = (
            self.rows.find({"_id": id_range(job_id), "kind": kind})
            .sort("_id", ASCENDING)
            .batch_size(batch_size)
        )
        async for doc in cursor:
            yield doc

    # ------------------------------------------------------------ duplicates keys
    async def federation_keys(self, federation_id: str, federation_path: str):
        """(id, every email and phone) of each contact of one federation."""
        cursor = self.contacts.find(
            {"federation_path": federation_path, "federation_id": federation_id},
            {"email": 1, "phone": 1, "emails.address": 1, "phones.number": 1},
        ).batch_size(5000)
        async for doc in cursor:
            yield doc["_id"], sorted(held_keys(doc))

    async def count_federation(self, federation_id: str, federation_path: str) -> int:
        return await self.contacts.count_documents(
            {"federation_path": federation_path, "federation_id": federation_id}
        )

    async def ids_by_keys(
        self,
        federation_id: str,
        keys: Sequence[str],
        session: AsyncClientSession | None = None,
    ) -> dict[str, str]:
        """key -> id of the federation's contacts holding one of these emails/phones."""
        if not keys:
            return {}
        keys = list(dict.fromkeys(keys))
        wanted = set(keys)
        out: dict[str, str] = {}
        fields = {"emails.address": keys, "phones.number": keys, "email": keys, "phone": keys}
        for doc in await holders(self.contacts, federation_id, fields, session):
            for key in wanted & held_keys(doc):
                out[key] = doc["_id"]
        return out

    async def contacts_by_ids(
        self, ids: Sequence[str], session: AsyncClientSession | None = None
    ) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        docs = await self.contacts.find({"_id": {"$in": list(ids)}}, session=session).to_list()
        return {d["_id"]: d for d in docs}

    async def suppressed(
        self, hashes: Sequence[str], session: AsyncClientSession | None = None
    ) -> set[str]:
        from contacts.suppression import SUPPRESSED

        if not hashes:
            return set()
        query = {"_id": {"$in": list(dict.fromkeys(hashes))}}
        found = self.store[SUPPRESSED].find(query, {"_id": 1}, session=session)
        return {d["_id"] async for d in found}

    async def suppressed_count(self) -> int:
        from contacts.suppression import SUPPRESSED

        return await self.store[SUPPRESSED].estimated_document_count()

    async def suppressed_all(self) -> set[str]:
        from contacts.suppression import SUPPRESSED

        return {d["_id"] async for d in self.store[SUPPRESSED].find({}, {"_id": 1})}

    # ------------------------------------------------------------ one batch, atomically
    async def write_contacts(
        self,
        session: AsyncClientSession,
        inserts: Sequence[dict[str, Any]],
        replaces: Sequence[tuple[dict[str, Any], int]],
    ) -> None:
        """New contacts (one insert_many) and new versions of contacts (replaced only at
        the version read, else StaleContacts), in the caller's transaction: the bulk write
        of imports and of form submissions."""
        if inserts:
            await self.contacts.insert_many(list(inserts), ordered=True, session=session)
        if replaces:
            result = await self.contacts.bulk_write(
                [ReplaceOne({"_id": d["_id"], "version": v}, d) for d, v in replaces],
                ordered=True,
                session=session,
            )
            if result.matched_count != len(replaces):
                raise StaleContacts()

    async def write_batch(
        self,
        session: AsyncClientSession,
        *,
        job_id: str,
        owner: str,
        inserts: Sequence[dict[str, Any]],
        replaces: Sequence[tuple[dict[str, Any], int]],
        events: dict[str, Any] | None,
        issues: Sequence[dict[str, Any]],
        job_update: dict[str, Any],
    ) -> None:
        """A batch's new contacts, merged contacts (if still at the version read), its
        events (one import-outbox document), its rejected/flagged rows and the job's
        progress, in the caller's transaction. Raises StaleContacts, or JobGone when the
        job was cancelled or taken over (nothing of the batch is then committed)."""
        await self.write_contacts(session, inserts, replaces)
        if events is not None:
            await self.outbox.add_packed(session, events)
        if issues:
            await self.rows.insert_many(list(issues), ordered=True, session=session)
        result = await self.jobs.update_one(
            {"_id": job_id, "owner": owner, "cancel_requested": {"$ne": True}},
            job_update,
            session=session,
        )
        if result.matched_count != 1:
            raise JobGone()


# ---------------------------------------------------------------- likely duplicates


class DuplicatesStore:
    def __init__(self, store: Store) -> None:
        self.contacts = store[CONTACTS]

    async def candidates(
        self, scope: dict[str, Any], *, from_postcode: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Contacts of the scope having a postcode, in postcode order from ``from_postcode``
        (names, postcode and federation only)."""
        query: dict[str, Any] = {**scope, "address.postcode": {"$type": "string"}}
        if from_postcode is not None:
            query["address.postcode"] = {"$gte": from_postcode}
        cursor = (
            self.contacts.find(
                query,
                {"given_name": 1, "family_name": 1, "address.postcode": 1, "federation_id": 1},
            )
            .sort([("address.postcode", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return await cursor.to_list()

    async def by_ids(self, ids: Sequence[str]) -> dict[str, Contact]:
        if not ids:
            return {}
        docs = await self.contacts.find({"_id": {"$in": list(ids)}}).to_list()
        return {d["_id"]: from_document(d) for d in docs}


# ---------------------------------------------------------------- merges


class MergeStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.contacts = store[CONTACTS]
        self.log = store[MERGES]

    async def get(
        self, scope: dict[str, Any], contact_id: str, session: AsyncClientSession
    ) -> dict[str, Any] | None:
        return await self.contacts.find_one({"_id": contact_id, **scope}, session=session)

    async def apply(
        self,
        session: AsyncClientSession,
        *,
        survivor: dict[str, Any],
        expected_version: int,
        merged_id: str,
        merged_version: int,
        record: dict[str, Any],
    ) -> bool:
        """Delete the merged contact (at the version read), store the survivor's new state
        (at the version read) and the merge record; False if either changed meanwhile."""
        deleted = await self.contacts.delete_one(
            {"_id": merged_id, "version": merged_version}, session=session
        )
        if deleted.deleted_count != 1:
            return False
        replaced = await self.contacts.replace_one(
            {"_id": survivor["_id"], "version": expected_version}, survivor, session=session
        )
        if replaced.matched_count != 1:
            return False
        await self.log.insert_one(record, session=session)
        return True

    async def page(
        self, scope: dict[str, Any], *, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        query: dict[str, Any] = dict(scope)
        if before is not None:
            query["_id"] = {"$lt": before}
        found = await self.log.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list()
        return found[:limit], len(found) > limit
