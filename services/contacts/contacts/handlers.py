"""Event handlers of the contacts service: small, idempotent, given their dependencies.

Contacts consumes only the federation tree for now (to place contacts in a federation
of the caller's subtree); erasure-requested comes next.
"""

from __future__ import annotations

from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store
from tribune_shared.subscriptions import Handler


def federation_handlers(store: Store) -> dict[str, Handler]:
    return FederationDirectory(store).handlers()
