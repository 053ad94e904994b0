"""The access audit: who viewed, changed or exported personal data, when, from where.

Every authenticated call the gateway answers for a client (the forwarded service APIs,
the person view, the access export, the audit itself) leaves one append-only entry: the
user and role, the action (``viewed`` for reads, ``exported`` for exports, ``changed``
for writes), the method and path, the person concerned when the path or the query names
one, the answer's status, and where the call came from, minimised (IPv4 /24, IPv6 /48,
a truncated user agent). Query strings are not kept (searches hold names and emails):
only their parameter names. Services keep their own, finer records on top (consent's
audit log: which consent changed, with what proof).

Changes to user accounts (created, role changed, deactivated or reactivated, password
changed or reset) are recorded the same way, naming the account (``target_user_id``) and
what changed (``changes``: the new role, ``active``, ``password: reset``; never a
password), attempts the account rules refused included: who tried to mint a DPO is what a
DPO wants to know.

Pure rules here; the store holds the entries (``gateway.store.AccessAuditStore``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict
from tribune_shared.auth import Identity
from tribune_shared.client_info import minimise_ip, minimise_user_agent


class AccessAction(StrEnum):
    viewed = "viewed"
    changed = "changed"
    exported = "exported"


_READS = frozenset({"GET", "HEAD"})
_EXPORT = re.compile(r"/(exports?|export\.csv)(/|$)|/privacy/requests/[^/]+/export$")
#: paths naming a person: /contacts/{id}..., /consents/{id}..., /people/{id}...
_SUBJECT = re.compile(
    r"^/api/v1/(?:contacts|consents|people|messages/reachability)/([A-Za-z0-9_-]{1,64})(?:/|$)"
)
#: contact routes whose next segment is a collection, not a person
_NOT_A_PERSON = frozenset(
    {
        "custom-fields",
        "exports",
        "imports",
        "duplicates",
        "merges",
        "audit",
        "texts",
        "privacy",
        "search",
    }
)
PATH_MAX_CHARS = 512
QUERY_KEYS_MAX = 20

# A client sends the same address and user agent on every call: minimise them once.
_minimised_ip = lru_cache(maxsize=4096)(minimise_ip)
_minimised_user_agent = lru_cache(maxsize=4096)(minimise_user_agent)


def action_of(method: str, path: str) -> AccessAction:
    if _EXPORT.search(path):
        return AccessAction.exported
    return AccessAction.viewed if method.upper() in _READS else AccessAction.changed


def subject_of(path: str, query: Mapping[str, str]) -> str | None:
    """The contact a call is about, when its path or its ``contact_id`` parameter says."""
    match = _SUBJECT.match(path)
    if match and match.group(1) not in _NOT_A_PERSON:
        return match.group(1)
    if path.startswith("/api/v1/privacy/") and "/privacy/requests" not in path:
        return None
    candidate = query.get("contact_id")
    if candidate and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", candidate):
        return candidate
    return None


class AccessEntry(BaseModel):
    """One audit entry, as the DPO reads it."""

    model_config = ConfigDict(frozen=True)

    id: str
    at: datetime
    user_id: str
    email: str
    role: str
    federation_path: str
    action: AccessAction
    method: str
    path: str
    query_keys: list[str]
    contact_id: str | None
    status: int
    ip: str | None
    user_agent: str | None
    #: the user account the call created or changed
    target_user_id: str | None = None
    #: what it changed on that account (field -> new value; a password is only named)
    changes: dict[str, str] | None = None


def access_document(
    entry_id: str,
    at: datetime,
    identity: Identity,
    method: str,
    path: str,
    query: Mapping[str, str],
    status: int,
    client_ip: str | None,
    user_agent: str | None,
    *,
    contact_id: str | None = None,
    target_user_id: str | None = None,
    changes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The stored form of an entry, built directly: it is made on every request, and the
    model (``AccessEntry``) is only needed to read entries back. ``contact_id`` names the
    person when the path and query do not."""
    account: dict[str, Any] = {}
    if target_user_id is not None or changes is not None:
        account = {"target_user_id": target_user_id, "changes": dict(changes or {})}
    return {
        "_id": entry_id,
        "at": at,
        "user_id": identity.user_id,
        "email": identity.email,
        "role": str(identity.role),
        "federation_path": identity.federation_path,
        "action": action_of(method, path).value,
        "method": method.upper(),
        "path": path[:PATH_MAX_CHARS],
        "query_keys": sorted(query)[:QUERY_KEYS_MAX],
        "contact_id": contact_id if contact_id is not None else subject_of(path, query),
        "status": status,
        "ip": _minimised_ip(client_ip),
        "user_agent": _minimised_user_agent(user_agent),
        **account,
    }


def access_entry(
    entry_id: str,
    at: datetime,
    identity: Identity,
    method: str,
    path: str,
    query: Mapping[str, str],
    status: int,
    client_ip: str | None,
    user_agent: str | None,
) -> AccessEntry:
    return from_document(
        access_document(entry_id, at, identity, method, path, query, status, client_ip, user_agent)
    )


def to_document(entry: AccessEntry) -> dict[str, Any]:
    doc = entry.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    return doc


def from_document(doc: Mapping[str, Any]) -> AccessEntry:
    return AccessEntry.model_validate({**doc, "id": doc["_id"]})
