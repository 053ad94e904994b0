"""Database access of consent's form side, in bulk: a batch of form-submission-applied
events costs one read per kind of fact (people, merges, address hashes, current states,
texts, boxes already recorded), whatever the number of submissions in it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import CONTACT_DIRECTORY
from tribune_shared.events.contracts import Channel
from tribune_shared.store import Store

from consent.domain import ConsentStatus
from consent.store import AUDIT, CONTACT_HASHES, CURRENT, LEDGER, TEXTS

#: (contact id, submission id, channel, purpose) of an entry a submission produced
Recorded = tuple[str, str, str, str]


class FormLedger:
    def __init__(self, store: Store) -> None:
        self.ledger = store[LEDGER]
        self.current = store[CURRENT]
        self.texts = store[TEXTS]
        self.audit = store[AUDIT]
        self._store = store

    # Projections are looked up at each use: `tribune rebuild` may switch them to a new
    # copy while the process runs (tribune_shared.projections).
    @property
    def hashes(self) -> Any:
        return self._store[CONTACT_HASHES]

    @property
    def directory(self) -> Any:
        return self._store[CONTACT_DIRECTORY]

    async def recorded(
        self, pairs: Iterable[tuple[str, str]], session: AsyncClientSession
    ) -> set[Recorded]:
        """The entries these (contact, submission) pairs already produced (a redelivered
        form-submission-applied records nothing twice): the ledger's contact index, then
        the proof's submission id."""
        pairs = set(pairs)
        if not pairs:
            return set()
        docs = self.ledger.find(
            {
                "contact_id": {"$in": sorted({c for c, _ in pairs})},
                "proof.submission_id": {"$in": sorted({s for _, s in pairs})},
            },
            {"contact_id": 1, "channel": 1, "purpose": 1, "proof.submission_id": 1},
            session=session,
        )
        found = set()
        async for d in docs:
            key = (d["contact_id"], d["proof"]["submission_id"])
            if key in pairs:
                found.add((*key, d["channel"], d["purpose"]))
        return found

    async def refusals_audited(
        self, pairs: Iterable[tuple[str, str]], action: str, session: AsyncClientSession
    ) -> set[str]:
        """The submissions among these (contact, submission) pairs whose refused boxes are
        already in the audit log (a redelivery does not log them twice)."""
        pairs = set(pairs)
        if not pairs:
            return set()
        docs = self.audit.find(
            {
                "contact_id": {"$in": sorted({c for c, _ in pairs})},
                "action": action,
                "detail.submission_id": {"$in": sorted({s for _, s in pairs})},
            },
            {"contact_id": 1, "detail.submission_id": 1},
            session=session,
        )
        return {
            d["detail"]["submission_id"]
            async for d in docs
            if (d["contact_id"], d["detail"]["submission_id"]) in pairs
        }

    async def people(
        self, contact_ids: Iterable[str], session: AsyncClientSession
    ) -> dict[str, dict[str, Any]]:
        """The directory's documents of these contacts (erased ones included: the caller
        tells an erased person from one not known yet)."""
        ids = sorted(set(contact_ids))
        if not ids:
            return {}
        docs = self.directory.find({"_id": {"$in": ids}}, session=session)
        return {d["_id"]: d async for d in docs}

    async def merged_into(
        self, contact_ids: Iterable[str], session: AsyncClientSession
    ) -> dict[str, list[str]]:
        """Each contact's id and every id merged into it, directly or along chains (one
        read per link of the longest chain, for all of them at once)."""
        members = {c: [c] for c in contact_ids}
        root_of = {c: c for c in members}
        frontier = list(members)
        while frontier:
            docs = self.directory.find(
                {"merged_into": {"$in": frontier}}, {"merged_into": 1}, session=session
            )
            frontier = []
            async for d in docs:
                if d["_id"] in root_of:
                    continue  # already seen (a cycle cannot loop)
                root = root_of[d["merged_into"]]
                root_of[d["_id"]] = root
                members[root].append(d["_id"])
                frontier.append(d["_id"])
        return members

    async def address_hashes(
        self, contact_ids: Iterable[str], session: AsyncClientSession
    ) -> dict[str, list[str]]:
        """The salted email and phone hashes of each contact."""
        ids = sorted(set(contact_ids))
        if not ids:
            return {}
        docs = self.hashes.find(
            {"_id": {"$in": ids}}, {"email_hashes": 1, "phone_hashes": 1}, session=session
        )
        return {
            d["_id"]: [*(d.get("email_hashes") or []), *(d.get("phone_hashes") or [])]
            async for d in docs
        }

    async def statuses(
        self, contact_ids: Iterable[str], session: AsyncClientSession
    ) -> dict[str, dict[tuple[Channel, str], ConsentStatus]]:
        """Each contact's current state of every (channel, purpose)."""
        ids = sorted(set(contact_ids))
        found: dict[str, dict[tuple[Channel, str], ConsentStatus]] = {c: {} for c in ids}
        if not ids:
            return found
        docs = self.current.find(
            {"contact_id": {"$in": ids}},
            {"contact_id": 1, "channel": 1, "purpose": 1, "status": 1},
            session=session,
        )
        async for d in docs:
            found[d["contact_id"]][(Channel(d["channel"]), d["purpose"])] = ConsentStatus(
                d["status"]
            )
        return found

    async def texts_for(
        self, versions: Iterable[str], paths: Iterable[str], session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """Consent's texts of these versions defined for any of these federations (the
        caller picks, per person, the one nearest their federation)."""
        versions, paths = sorted(set(versions)), sorted(set(paths))
        if not versions or not paths:
            return []
        return await self.texts.find(
            {"version": {"$in": versions}, "federation_path": {"$in": paths}}, session=session
        ).to_list()
