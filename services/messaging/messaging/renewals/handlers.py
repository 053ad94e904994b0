"""membership-renewal-requested: the renewal reminder email (idempotent: its message id
derives from the event id)."""

from __future__ import annotations

from tribune_shared.subscriptions import Handler

from messaging.renewals.service import RenewalReminders
from messaging.service import MessagingService


def renewal_handlers(service: MessagingService) -> dict[str, Handler]:
    return {"membership-renewal-requested": RenewalReminders(service).on_renewal_requested}
