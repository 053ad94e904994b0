"""All database access of the consent service."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.contact_directory import CONTACT_DIRECTORY, ERASED_VERSION, ContactDirectory
from tribune_shared.events.contracts import Channel
from tribune_shared.store import IndexSpec, Projected, Store, subtree_filter, upsert_many_if_newer

from consent.domain import ConsentStatus, LedgerEntry

LEDGER = "consent_ledger"  # append-only
CURRENT = "consents"  # derived current state per contact x channel x purpose
TEXTS = "consent_texts"  # consent texts per federation, immutable once used as proof
CONTACT_HASHES = "contact_hashes"  # salted hashes of each contact's emails and phones
SUPPRESSION = "suppression"  # salted hashes of suppressed addresses (never in clear)
AUDIT = "audit_log"  # append-only: who viewed or changed consent data
#: the privacy requests' audit (consent.privacy_service): shown in the same DPO log
PRIVACY_AUDIT = "privacy_audit"
#: version of an erased contact's hashes: no contact event is ever newer

INDEXES = [
    *ContactDirectory.indexes,
    IndexSpec(LEDGER, [("contact_id", ASCENDING), ("recorded_at", ASCENDING)]),
    IndexSpec(CURRENT, [("contact_id", ASCENDING)]),
    IndexSpec(CURRENT, [("federation_path", ASCENDING)]),
    IndexSpec(TEXTS, [("federation_id", ASCENDING), ("version", ASCENDING)], {"unique": True}),
    IndexSpec(TEXTS, [("version", ASCENDING), ("federation_path", ASCENDING)]),
    IndexSpec(CONTACT_HASHES, [("email_hashes", ASCENDING)]),
    IndexSpec(CONTACT_HASHES, [("phone_hashes", ASCENDING)]),
    IndexSpec(AUDIT, [("federation_path", ASCENDING), ("at", DESCENDING)]),
    IndexSpec(AUDIT, [("contact_id", ASCENDING), ("at", DESCENDING)]),
]


def current_key(contact_id: str, channel: Channel | str, purpose: str) -> str:
    return f"{contact_id}:{Channel(channel).value}:{purpose}"


class ConsentStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ figures

    async def rates(self, federation_path: str) -> tuple[int, list[dict[str, Any]]]:
        """(people known in a subtree, consents there by channel, purpose and status): two
        indexed aggregations, whatever the number of people (the dashboard's rates)."""
        scope = subtree_filter(federation_path)
        people = await self.store[CONTACT_DIRECTORY].count_documents(scope)
        rows = await (
            await self.store[CURRENT].aggregate(
                [
                    {"$match": scope},
                    {
                        "$group": {
                            "_id": {
                                "channel": "$channel",
                                "purpose": "$purpose",
                                "status": "$status",
                            },
                            "n": {"$sum": 1},
                        }
                    },
                ]
            )
        ).to_list()
        return people, [{**row["_id"], "n": int(row["n"])} for row in rows]

    # ------------------------------------------------------------ ledger

    async def history(self, contact_id: str) -> list[LedgerEntry]:
        docs = (
            await self.store[LEDGER]
            .find({"contact_id": contact_id})
            .sort([("recorded_at", ASCENDING), ("_id", ASCENDING)])
            .to_list()
        )
        return [LedgerEntry.model_validate(d) for d in docs]

    async def current(
        self, contact_id: str, channel: Channel, purpose: str, session: AsyncClientSession | None
    ) -> ConsentStatus | None:
        doc = await self.current_doc(contact_id, channel, purpose, session)
        return ConsentStatus(doc["status"]) if doc else None

    async def current_doc(
        self, contact_id: str, channel: Channel, purpose: str, session: AsyncClientSession | None
    ) -> dict[str, Any] | None:
        return await self.store[CURRENT].find_one(
            {"_id": current_key(contact_id, channel, purpose)}, session=session
        )

    async def current_all(
        self, contact_id: str, session: AsyncClientSession | None = None
    ) -> list[dict[str, Any]]:
        return (
            await self.store[CURRENT]
            .find({"contact_id": contact_id}, session=session)
            .sort([("channel", ASCENDING), ("purpose", ASCENDING)])
            .to_list()
        )

    async def append_many(
        self,
        entries: list[LedgerEntry],
        contact: dict[str, Any],
        session: AsyncClientSession,
        *,
        pending: list[dict[str, Any] | None] | None = None,
    ) -> None:
        """Add the entries to the ledger and make each the current state of its channel
        and purpose (same transaction; two writes whatever the number). A pending entry's
        double opt-in request is kept on the current state while it is pending, and
        dropped by any later entry."""
        await self.append_batch([(entries, contact, pending or [None] * len(entries))], session)

    async def append_batch(
        self,
        groups: Sequence[tuple[list[LedgerEntry], dict[str, Any], list[dict[str, Any] | None]]],
        session: AsyncClientSession,
    ) -> None:
        """``append_many`` for many people at once, (entries, contact, pending) each: still
        two writes for the whole batch (a batch handler's many submissions)."""
        ledger: list[dict[str, Any]] = []
        updates = []
        for entries, contact, pending in groups:
            for entry, request in zip(entries, pending, strict=True):
                ledger.append(
                    {
                        **entry.model_dump(mode="python"),
                        "federation_id": contact.get("federation_id"),
                        "federation_path": contact["federation_path"],
                    }
                )
                fields: dict[str, Any] = {
                    "contact_id": entry.contact_id,
                    "channel": entry.channel.value,
                    "purpose": entry.purpose,
                    "status": entry.status.value,
                    "updated_at": entry.recorded_at,
                    "federation_path": contact["federation_path"],
                }
                update: dict[str, Any] = {"$set": fields}
                if request is not None:
                    fields["pending"] = request
                else:
                    update["$unset"] = {"pending": ""}
                key = current_key(entry.contact_id, entry.channel, entry.purpose)
                updates.append(UpdateOne({"_id": key}, update, upsert=True))
        if not ledger:
            return
        await self.store[LEDGER].insert_many(ledger, session=session)
        await self.store[CURRENT].bulk_write(updates, ordered=True, session=session)

    async def merge_ledger(
        self, merged_id: str, survivor_id: str, session: AsyncClientSession
    ) -> None:
        """contact-merged: the merged contact's entries (decisions and proof unchanged)
        become part of the survivor's history, marked with the id they were recorded
        under; the merged contact has no current state any more."""
        await self.store[LEDGER].update_many(
            {"contact_id": merged_id},
            {"$set": {"contact_id": survivor_id, "merged_from": merged_id}},
            session=session,
        )
        await self.store[CURRENT].delete_many({"contact_id": merged_id}, session=session)

    async def append(
        self,
        entry: LedgerEntry,
        contact: dict[str, Any],
        session: AsyncClientSession,
        *,
        pending: dict[str, Any] | None = None,
    ) -> None:
        await self.append_many([entry], contact, session, pending=[pending])

    # ------------------------------------------------------------ consent texts

    async def insert_text(
        self, doc: dict[str, Any], session: AsyncClientSession | None = None
    ) -> None:
        await self.store[TEXTS].insert_one(doc, session=session)

    async def text(
        self,
        text_id: str,
        scope: dict[str, Any],
        session: AsyncClientSession | None = None,
    ) -> dict[str, Any] | None:
        return await self.store[TEXTS].find_one({"_id": text_id, **scope}, session=session)

    async def texts(self, scope: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        return (
            await self.store[TEXTS]
            .find(scope)
            .sort([("federation_path", ASCENDING), ("version", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def text_for(
        self, version: str, paths: list[str], session: AsyncClientSession | None
    ) -> dict[str, Any] | None:
        """The text of that version closest to the contact (its federation, else the
        nearest ancestor's)."""
        docs = (
            await self.store[TEXTS]
            .find({"version": version, "federation_path": {"$in": paths}}, session=session)
            .to_list()
        )
        return max(docs, key=lambda d: len(d["federation_path"]), default=None)

    async def mark_text_used(self, text_id: str, at: datetime, session: AsyncClientSession) -> None:
        await self.store[TEXTS].update_one(
            {"_id": text_id, "used": False},
            {"$set": {"used": True, "first_used_at": at}},
            session=session,
        )

    async def update_unused_text(
        self,
        text_id: str,
        scope: dict[str, Any],
        fields: dict[str, Any],
        session: AsyncClientSession | None = None,
    ) -> dict[str, Any] | None:
        """Change a text only while no proof refers to it: the text as changed (its
        ``revision`` counted up: the order of consent-text-published), None if it was used."""
        return await self.store[TEXTS].find_one_and_update(
            {"_id": text_id, "used": False, **scope},
            {"$set": fields, "$inc": {"revision": 1}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def delete_unused_text(
        self, text_id: str, scope: dict[str, Any], session: AsyncClientSession | None = None
    ) -> bool:
        result = await self.store[TEXTS].delete_one(
            {"_id": text_id, "used": False, **scope}, session=session
        )
        return result.deleted_count == 1

    # ------------------------------------------------------------ address hashes

    # ``into``: the collection written, the active one unless a rebuild
    # (consent.projections) builds a fresh version of it

    async def project_hashes_many(
        self, states: list[Projected], session: AsyncClientSession, *, into: str = CONTACT_HASHES
    ) -> None:
        """The batch form: one read and one bulk write (tombstones for erased people)."""
        await upsert_many_if_newer(self.store[into], states, session=session)

    async def forget_hashes(
        self, contact_id: str, session: AsyncClientSession | None, *, into: str = CONTACT_HASHES
    ) -> None:
        """An erased contact: no hash of theirs stays here, and no late event re-adds one."""
        await self.store[into].replace_one(
            {"_id": contact_id},
            {"erased": True, "version": ERASED_VERSION, "email_hashes": [], "phone_hashes": []},
            upsert=True,
            session=session,
        )

    async def hashes_of(
        self, contact_ids: Sequence[str], session: AsyncClientSession | None = None
    ) -> dict[str, list[str]]:
        """The address hashes of these contacts (one person: their id and the ids merged
        into them), each once."""
        docs = (
            await self.store[CONTACT_HASHES]
            .find({"_id": {"$in": list(contact_ids)}}, session=session)
            .to_list()
        )
        return {
            "email": list(dict.fromkeys(h for d in docs for h in d.get("email_hashes") or [])),
            "phone": list(dict.fromkeys(h for d in docs for h in d.get("phone_hashes") or [])),
        }

    async def contacts_with_phone(
        self, phone_hash: str, session: AsyncClientSession | None = None
    ) -> list[str]:
        docs = (
            await self.store[CONTACT_HASHES]
            .find(
                {"phone_hashes": phone_hash, "erased": {"$ne": True}}, {"_id": 1}, session=session
            )
            .to_list()
        )
        return [d["_id"] for d in docs]

    # ------------------------------------------------------------ suppression list

    async def suppressed_among(
        self, hashes: Iterable[str], session: AsyncClientSession | None = None
    ) -> set[str]:
        wanted = list(dict.fromkeys(hashes))
        if not wanted:
            return set()
        docs = (
            await self.store[SUPPRESSION]
            .find({"_id": {"$in": wanted}}, {"_id": 1}, session=session)
            .to_list()
        )
        return {d["_id"] for d in docs}

    async def add_suppressions(
        self,
        hashes: Iterable[tuple[str, str]],
        reason: str,
        at: datetime,
        session: AsyncClientSession,
    ) -> None:
        """``hashes``: (address hash, kind) pairs not on the list yet."""
        await self.store[SUPPRESSION].insert_many(
            [{"_id": h, "kind": kind, "reason": reason, "added_at": at} for h, kind in hashes],
            session=session,
        )

    # ------------------------------------------------------------ audit log

    async def add_audits(
        self, docs: list[dict[str, Any]], session: AsyncClientSession | None
    ) -> None:
        await self.store[AUDIT].insert_many(docs, session=session)

    async def audit_page(
        self,
        identity: Identity,
        filters: dict[str, Any],
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Newest first, from consent's audit log and the privacy requests' one, in the
        caller's subtree; ``after`` = (at, id) of the last entry already shown."""
        query: dict[str, Any] = {**filters, **identity.scope()}
        if after is not None:
            at, last_id = after
            query = {
                "$and": [
                    query,
                    {"$or": [{"at": {"$lt": at}}, {"at": at, "_id": {"$lt": last_id}}]},
                ]
            }
        order = [("at", DESCENDING), ("_id", DESCENDING)]
        found: list[dict[str, Any]] = []
        for collection in (AUDIT, PRIVACY_AUDIT):
            found += await self.store[collection].find(query).sort(order).limit(limit).to_list()
        found.sort(key=lambda d: (d["at"], d["_id"]), reverse=True)
        return found[:limit]
