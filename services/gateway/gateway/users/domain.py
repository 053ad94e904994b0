"""Rules of user administration, free of I/O.

**Nobody gives more than they have.** Roles rank: ``viewer`` < ``secretary``,
``treasurer``, ``campaign_manager`` < ``admin``. A caller may give a role (to a user, or
to an API key) only up to their own rank, and only within their subtree (a user's
federation, old and new, must be in the caller's subtree: else 404). Today only
administrators (and, for the DPO role alone, DPOs) manage accounts, so an administrator
may give any ranked role; the rule still holds for anybody later allowed to.

The DPO role is outside the ranking: it is given only by a DPO or a national
administrator, with their password (``gateway.domain.grants_dpo`` and
``check_account_change``); moving a DPO to another federation changes which subtree
they audit, so it counts as giving the role.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Forbidden, InvalidField

RANK: dict[Role, int] = {
    Role.viewer: 0,
    Role.secretary: 1,
    Role.treasurer: 1,
    Role.campaign_manager: 1,
    Role.admin: 2,
}
MAX_QUERY_CHARS = 100


def check_role_within(identity: Identity, role: Role, field: str = "role") -> None:
    """Forbidden unless ``identity`` may give ``role`` (never above their own; the DPO
    role has its own rule, checked by the caller)."""
    if role is Role.dpo:
        return
    mine = RANK.get(identity.role)
    if mine is None or RANK[role] > mine:
        raise Forbidden(f"you may not give the role {role.value}: it is above yours", field=field)


def moves_dpo(target: dict[str, Any], role: Role | None, new_path: str | None) -> bool:
    """True if the change leaves a DPO in another federation than before."""
    is_dpo = (role or Role(target["role"])) is Role.dpo
    return is_dpo and new_path is not None and new_path != target["federation_path"]


def search_pattern(q: str) -> str:
    """The users whose email holds ``q`` (case-insensitive: emails are stored lower-cased),
    as an anchored-nowhere regex of the literal text."""
    text = q.strip().lower()
    if not text:
        raise InvalidField("must not be blank", field="q")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidField(f"must have at most {MAX_QUERY_CHARS} characters", field="q")
    return re.escape(text)


def encode_cursor(email: str) -> str:
    """Pages go by email (unique, and how people look for a user)."""
    return base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        email = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidField("not a cursor of this listing", field="cursor") from None
    if not email or len(email) > 254:
        raise InvalidField("not a cursor of this listing", field="cursor")
    return email
