"""The treasurer's lists: the payments of a subtree, filtered, newest first, paged."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tribune_shared.auth import Identity
from tribune_shared.errors import InvalidField, NotFound
from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store, subtree_filter

from memberships.payments.store import PaymentsStore
from memberships.settings import MembershipsSettings


@dataclass(frozen=True)
class PaymentFilter:
    contact_id: str | None = None
    federation_id: str | None = None
    status: str | None = None
    method: str | None = None
    purpose: str | None = None
    #: True: only payments whose amount differs from their plan's; False: only the others
    amount_flagged: bool | None = None
    #: True: only accepted cheques not yet on a remittance slip
    unremitted: bool | None = None


def encode_cursor(doc: dict[str, Any]) -> str:
    raw = json.dumps([doc["paid_at"].isoformat(), doc["_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        paid_at, payment_id = json.loads(raw)
        return datetime.fromisoformat(paid_at), str(payment_id)
    except (ValueError, TypeError) as exc:
        raise InvalidField("not a cursor this list gave", field="cursor") from exc


class PaymentLists:
    def __init__(self, settings: MembershipsSettings, store: Store) -> None:
        self.settings = settings
        self.repo = PaymentsStore(store)
        self.federations = FederationDirectory(store)

    async def page(
        self, identity: Identity, filters: PaymentFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        query: dict[str, Any] = dict(identity.scope())
        if filters.federation_id is not None:
            _, path = await self.federations.resolve(identity, filters.federation_id)
            query = subtree_filter(path)
        if filters.contact_id is not None:
            query["contact_id"] = filters.contact_id
        for name in ("status", "method", "purpose"):
            if (value := getattr(filters, name)) is not None:
                query[name] = value
        if filters.amount_flagged is not None:
            query["amount_check.flagged"] = True if filters.amount_flagged else {"$ne": True}
        if filters.unremitted is not None:
            if filters.unremitted:
                query.update(method="cheque", status="accepted", slip_id=None)
            else:
                query["slip_id"] = {"$ne": None}
        docs, more = await self.repo.page(
            query,
            limit=min(limit, self.settings.max_page_size),
            after=decode_cursor(cursor) if cursor else None,
        )
        return docs, encode_cursor(docs[-1]) if more and docs else None

    async def get(self, identity: Identity, payment_id: str) -> dict[str, Any]:
        doc = await self.repo.payment({"_id": payment_id, **identity.scope()})
        if doc is None:
            raise NotFound("payment not found", field="payment_id")
        return doc
