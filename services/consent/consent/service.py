"""Use cases: a change to the ledger and its event commit together (outbox)."""

from __future__ import annotations

from tribune_shared.auth import Identity
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import NotFound
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import Channel, ConsentGrantedV1, ConsentRevokedV1
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from consent.domain import ConsentStatus, LedgerEntry, check_purpose, needs_entry
from consent.settings import ConsentSettings
from consent.store import ConsentStore


class ConsentService:
    def __init__(self, settings: ConsentSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.consents = ConsentStore(store)
        self.contacts = ContactDirectory(store)
        self.outbox = Outbox(store)

    async def change(
        self,
        identity: Identity,
        contact_id: str,
        channel: Channel,
        purpose: str,
        wanted: ConsentStatus,
        source: str,
        proof: dict[str, str],
    ) -> tuple[ConsentStatus, bool]:
        """Record a grant or revocation; returns (status, changed)."""
        check_purpose(purpose, self.settings.purposes)
        contact = await self.contacts.visible(identity, contact_id)
        if contact is None:
            raise NotFound("contact not found")
        async with self.store.transaction() as session:
            current = await self.consents.current(contact_id, channel, purpose, session)
            if not needs_entry(current, wanted):
                return wanted, False
            now = utcnow()
            entry = LedgerEntry(
                contact_id=contact_id,
                channel=channel,
                purpose=purpose,
                status=wanted,
                source=source,
                proof=proof,
                actor=identity.user_id,
                recorded_at=now,
            )
            await self.consents.append(entry, contact, session)
            if wanted is ConsentStatus.granted:
                event = ConsentGrantedV1(
                    contact_id=contact_id,
                    channel=channel,
                    purpose=purpose,
                    source=source,
                    proof=proof,
                    granted_at=now,
                )
            else:
                event = ConsentRevokedV1(
                    contact_id=contact_id,
                    channel=channel,
                    purpose=purpose,
                    source=source,
                    revoked_at=now,
                )
            await self.outbox.add(
                session,
                new_envelope(
                    event,
                    producer="consent",
                    federation_id=contact["federation_id"],
                    federation_path=contact["federation_path"],
                ),
            )
        return wanted, True

    async def view(self, identity: Identity, contact_id: str) -> dict:
        if await self.contacts.visible(identity, contact_id) is None:
            raise NotFound("contact not found")
        return {
            "contact_id": contact_id,
            "consents": [
                {k: d[k] for k in ("channel", "purpose", "status", "updated_at")}
                for d in await self.consents.current_all(contact_id)
            ],
            "history": await self.consents.history(contact_id),
        }
