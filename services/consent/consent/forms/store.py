"""Database access of consent's form side: which boxes of a submission are already in
the ledger (a redelivered form-submission-applied records nothing twice)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import Store

from consent.store import LEDGER


class FormLedger:
    def __init__(self, store: Store) -> None:
        self.ledger = store[LEDGER]

    async def recorded(
        self, contact_id: str, submission_id: str, session: AsyncClientSession
    ) -> set[tuple[str, str]]:
        """(channel, purpose) of the entries the submission already produced for the
        person (the ledger's contact index, then the proof's submission id)."""
        docs = self.ledger.find(
            {"contact_id": contact_id, "proof.submission_id": submission_id},
            {"channel": 1, "purpose": 1},
            session=session,
        )
        return {(d["channel"], d["purpose"]) async for d in docs}
