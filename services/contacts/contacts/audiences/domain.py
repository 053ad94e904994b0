"""Which contacts a campaign reaches (pure rules)."""

from __future__ import annotations

from typing import Any

from tribune_shared.events.contracts import Channel
from tribune_shared.store import subtree_filter

#: the contact field holding the address a channel sends to
ADDRESS_FIELD = {Channel.email: "email", Channel.sms: "phone"}


class AudienceError(Exception):
    """The audience cannot be resolved; the reason is shown in the campaign's state."""


def audience_scope(campaign_path: str, segment_path: str | None) -> dict[str, Any]:
    """The subtree the audience is drawn from: the campaign's federation subtree, narrowed
    to the segment's when the segment belongs to a federation below it. A segment of an
    ancestor federation (inherited down the tree) applies within the campaign's subtree;
    a segment of another branch is not the campaign's to use."""
    if segment_path is None or campaign_path.startswith(segment_path):
        return subtree_filter(campaign_path)
    if segment_path.startswith(campaign_path):
        return subtree_filter(segment_path)
    raise AudienceError("the segment belongs to another federation than the campaign's")


def address_condition(channel: Channel, needs_address: bool) -> dict[str, Any]:
    """Contacts without an address on the channel are left out when the campaign asks."""
    if not needs_address:
        return {}
    field = ADDRESS_FIELD.get(channel)
    if field is None:
        return {}
    return {field: {"$nin": [None, ""]}}
