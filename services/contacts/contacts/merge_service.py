"""Likely duplicates for review, and merges: the survivor keeps the chosen values, the
merged contact is deleted, the merge is logged, and contact-merged (so other services
remap the old id) and contact-updated (the survivor's new state) are published through
the outbox, all in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.errors import Conflict, NotFound, Refused
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactMergedV1
from tribune_shared.ids import sortable_id
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store, subtree_filter

from contacts.domain import (
    Contact,
    InvalidFields,
    changed_fields,
    contact_updated,
    normalise_contact,
)
from contacts.import_jobs import now_ms
from contacts.meetings.service import carry_registrations
from contacts.merge import (
    Candidate,
    LikelyPair,
    block_pairs,
    blocks,
    check_choices,
    decode_duplicates_cursor,
    encode_duplicates_cursor,
    merged_fields,
    name_key,
)
from contacts.service import ContactsService
from contacts.settings import ContactsSettings
from contacts.store import DuplicatesStore, MergeStore, from_document, to_document

log = get_logger(__name__)


class MergeService:
    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.duplicates = DuplicatesStore(store)
        self.merges = MergeStore(store)
        self.outbox = Outbox(store)
        self.contacts = ContactsService(settings, store)

    # ------------------------------------------------------------ likely duplicates
    async def likely_duplicates(
        self,
        identity: Identity,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        threshold: float | None = None,
        federation_id: str | None = None,
    ) -> dict[str, Any]:
        """Pairs of contacts of the caller's subtree with alike names at the same postcode
        in the same federation, best first within each postcode, postcodes in order. At
        most ``duplicate_max_scanned`` contacts are read per call: ``next_cursor``
        continues (null at the end)."""
        limit = limit or self.settings.duplicate_default_limit
        if not 1 <= limit <= self.settings.max_page_size:
            raise InvalidFields([("limit", f"must be between 1 and {self.settings.max_page_size}")])
        threshold = self.settings.duplicate_name_threshold if threshold is None else threshold
        scope = identity.scope()
        if federation_id is not None:
            _, path = await self.contacts.directory.resolve(identity, federation_id)
            scope = subtree_filter(path)
        start, skip = decode_duplicates_cursor(cursor) if cursor else (None, 0)
        max_scanned = self.settings.duplicate_max_scanned
        docs = await self.duplicates.candidates(scope, from_postcode=start, limit=max_scanned + 1)
        truncated = len(docs) > max_scanned
        docs = docs[:max_scanned]
        postcodes: list[str] = []
        by_postcode: dict[str, list[Candidate]] = {}
        for d in docs:
            postcode = (d.get("address") or {}).get("postcode")
            if not postcode:
                continue
            if postcode not in by_postcode:
                postcodes.append(postcode)
                by_postcode[postcode] = []
            by_postcode[postcode].append(
                Candidate(
                    d["_id"],
                    d["federation_id"],
                    postcode,
                    name_key(d.get("given_name", ""), d.get("family_name", "")),
                )
            )
        # The last postcode read may continue past the limit: leave it to the next call,
        # unless it is the only one (a postcode larger than the limit is read in part).
        partial: str | None = None
        if truncated and len(postcodes) > 1:
            postcodes.pop()
        elif truncated and postcodes:
            partial = postcodes[0]
        items: list[LikelyPair] = []
        next_cursor = None
        for postcode in postcodes:
            pairs = [
                p
                for block in blocks(by_postcode[postcode])
                for p in block_pairs(block, threshold, self.settings.duplicate_max_block)
            ]
            pairs.sort(key=lambda p: (-p.score, p.a, p.b))
            if postcode == start:
                pairs = pairs[skip:]
                already = skip
            else:
                already = 0
            room = limit - len(items)
            if len(pairs) > room:
                items.extend(pairs[:room])
                next_cursor = encode_duplicates_cursor(postcode, already + room)
                break
            items.extend(pairs)
        else:
            if truncated and postcodes:
                last = postcodes[-1]
                following = docs[-1].get("address", {}).get("postcode") if docs else None
                if partial is not None:
                    # Move past the oversized postcode ("\0" sorts right after it).
                    next_cursor = encode_duplicates_cursor(last + "\0", 0)
                elif following is not None:
                    next_cursor = encode_duplicates_cursor(following, 0)
        contacts = await self.duplicates.by_ids(sorted({i for p in items for i in (p.a, p.b)}))
        out = [
            {
                "score": p.score,
                "postcode": p.postcode,
                "federation_id": p.federation_id,
                "a": contacts[p.a],
                "b": contacts[p.b],
            }
            for p in items
            if p.a in contacts and p.b in contacts
        ]
        return {
            "items": out,
            "next_cursor": next_cursor,
            "threshold": threshold,
            "scanned": len(docs),
            "partial_postcode": partial,
        }

    # ------------------------------------------------------------ merge
    async def merge(
        self,
        identity: Identity,
        survivor_id: str,
        merged_id: str,
        choices: Mapping[str, str],
        *,
        survivor_version: int | None = None,
        merged_version: int | None = None,
    ) -> Contact:
        """Merge ``merged_id`` into ``survivor_id`` (both of the caller's subtree, else
        404; of the same federation, else 409) with the chosen field values."""
        if survivor_id == merged_id:
            raise InvalidFields([("merged_id", "a contact cannot be merged into itself")])
        picked = check_choices(choices)
        scope = identity.scope()

        async def merge_in(session: AsyncClientSession) -> Contact:
            return await self._merge_in(
                session,
                identity,
                scope,
                survivor_id,
                merged_id,
                picked,
                survivor_version,
                merged_version,
            )

        try:
            updated = await self.store.run_transaction(merge_in, what="contacts.merge")
        except DuplicateKeyError:  # never retried: another contact committed them first
            raise Conflict(
                "the merged emails/phones are now held by another contact: read them again"
            ) from None
        log.info("contacts.merged", surviving=survivor_id, merged=merged_id)
        return updated

    async def _merge_in(
        self,
        session: AsyncClientSession,
        identity: Identity,
        scope: dict[str, Any],
        survivor_id: str,
        merged_id: str,
        picked,
        survivor_version: int | None,
        merged_version: int | None,
    ) -> Contact:
        survivor_doc = await self.merges.get(scope, survivor_id, session)
        if survivor_doc is None:
            raise NotFound("contact not found")
        merged_doc = await self.merges.get(scope, merged_id, session)
        if merged_doc is None:
            raise NotFound("contact not found", field="merged_id")
        survivor, merged = from_document(survivor_doc), from_document(merged_doc)
        if survivor.federation_id != merged.federation_id:
            raise Refused(
                "contacts of different federations are different people here: "
                "move one first (PATCH federation_id), then merge"
            )
        for name, contact, expected in (
            ("survivor_version", survivor, survivor_version),
            ("merged_version", merged, merged_version),
        ):
            if expected is not None and expected != contact.version:
                raise Conflict(
                    "the contact changed since you read it: read it again",
                    field=name,
                    current_version=contact.version,
                )
        fields, custom = merged_fields(survivor, merged, picked)
        try:
            fields = normalise_contact(fields, self.contacts.rules)
        except InvalidFields as exc:
            raise InvalidFields(
                [(f"fields.{f.split('.')[0]}", r) for f, r in exc.problems]
            ) from None
        now = now_ms()
        updated = Contact.model_validate(
            {
                **survivor.model_dump(),
                "given_name": fields.given_name,
                "family_name": fields.family_name,
                "emails": list(fields.emails or ()),
                "phones": list(fields.phones or ()),
                "address": fields.address,
                "constituency": fields.constituency,
                "polling_station": fields.polling_station,
                "birth_year": fields.birth_year,
                "tags": list(fields.tags),
                "custom_fields": custom,
                "suppressed": survivor.suppressed or merged.suppressed,
                "version": survivor.version + 1,
                "updated_at": max(now, survivor.updated_at),
                "updated_by": identity.user_id,
            }
        )
        changed = changed_fields(survivor, updated)
        managed = set(Contact.model_fields) | {"search", "_id"}
        doc = {k: v for k, v in survivor_doc.items() if k not in managed}
        doc.update(to_document(updated))
        imports = [
            *(survivor_doc.get("import_ids") or ()),
            *(merged_doc.get("import_ids") or ()),
        ]
        if imports:
            doc["import_ids"] = list(dict.fromkeys(imports))
        record = {
            "_id": sortable_id(),
            "federation_id": survivor.federation_id,
            "federation_path": survivor.federation_path,
            "surviving_contact_id": survivor.id,
            "merged_contact_id": merged.id,
            "merged_by": identity.user_id,
            "merged_by_email": identity.email,
            "merged_at": now,
            "choices": {k: v.value for k, v in picked.items()},
            "changed_fields": changed,
            "surviving_version": updated.version,
            "merged_version": merged.version,
            "merged_origin": merged.origin.model_dump(mode="json"),
        }
        if not await self.merges.apply(
            session,
            survivor=doc,
            expected_version=survivor.version,
            merged_id=merged.id,
            merged_version=merged.version,
            record=record,
        ):
            raise Conflict("a contact changed during the merge: read them again")
        events = [
            new_envelope(
                ContactMergedV1(
                    merged_contact_id=merged.id,
                    surviving_contact_id=survivor.id,
                    contact_version=merged.version + 1,
                    merged_by=identity.user_id,
                ),
                producer=self.settings.service_name,
                federation_id=merged.federation_id,
                federation_path=merged.federation_path,
            ),
            contact_updated(updated, changed, self.settings.service_name),
        ]
        # the person's meeting registrations follow them (contacts.meetings)
        await carry_registrations(self.store, merged.id, survivor.id, session)
        await self.outbox.add(session, *events)
        return updated

    async def merge_log(
        self, identity: Identity, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        records, more = await self.merges.page(identity.scope(), limit=limit, before=cursor)
        items = [{"id": r.pop("_id"), **r} for r in records]
        return items, (items[-1]["id"] if more and items else None)
