"""What each role sees of a contact (GDPR art. 5(1)(c), data minimisation): pure rules.

Two views:

- **full**: every field. The roles of ``CONTACTS_CONTACT_DETAILS_ROLES`` (by default every
  role but ``viewer``: the administrator, the secretary who keeps the file, the treasurer
  who issues receipts to a postal address, the campaign manager, the DPO).
- **restricted**: who the person is in the organisation, not how to reach them. Names,
  federation, tags, constituency, data origin, versions and dates stay; the contact
  details (``HIDDEN_FIELDS``: emails, phones, postal address with its postcode, polling
  station, birth year, custom fields) are emptied and named in ``hidden_fields``.

A restricted role may not filter or search on what it cannot see either (a filter is an
oracle: bisecting postcodes or email prefixes would reveal them): searching matches names
only, and a filter naming a hidden field is refused (403).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer
from tribune_shared.auth import Identity, Role

from contacts.domain import Contact

#: the fields a restricted view empties (value it gets), in the order the API lists them
HIDDEN_FIELDS: dict[str, Any] = {
    "email": None,
    "emails": [],
    "phone": None,
    "phones": [],
    "postcode": None,
    "address": None,
    "polling_station": None,
    "birth_year": None,
    "custom_fields": {},
}

#: filters (list parameters and filter-language geography) on hidden fields
HIDDEN_GEO_FIELDS = frozenset({"postcode", "commune_insee", "department", "polling_station"})


class ContactView(Contact):
    """A contact as one caller may see it; ``hidden_fields`` lists what its role may not
    see (those fields are empty), and is left out of the JSON when nothing is hidden."""

    hidden_fields: list[str] = Field(
        default_factory=list,
        description="fields your role may not see (they are empty here); absent: nothing hidden",
    )

    @model_serializer(mode="wrap")
    def _without_empty_hidden(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and not self.hidden_fields:
            data.pop("hidden_fields", None)
        return data


def sees_details(identity: Identity, detail_roles: Collection[Role]) -> bool:
    return identity.role in detail_roles


def view_of(contact: Contact, identity: Identity, detail_roles: Collection[Role]) -> ContactView:
    """``contact`` as ``identity`` may see it."""
    data = contact.model_dump()
    if sees_details(identity, detail_roles):
        return ContactView.model_validate(data)
    data.update(HIDDEN_FIELDS)
    # every hidden field is named, held or not: "hidden" must not tell "has an email"
    return ContactView.model_validate({**data, "hidden_fields": list(HIDDEN_FIELDS)})


def hidden_list_filters(
    given: Mapping[str, Any], custom: Mapping[str, Any], has: Mapping[str, bool | None]
) -> list[str]:
    """The list endpoint's parameters that filter on hidden fields (for a restricted role)."""
    names = [name for name in sorted(HIDDEN_GEO_FIELDS) if given.get(name)]
    names += [f"cf.{name}" for name in custom]
    names += [name for name, value in has.items() if value is not None]
    return names


def hidden_filter_nodes(dumped: Any, prefix: str = "filter") -> Iterator[str]:
    """Paths of the nodes of a (dumped) filter-language tree that compare a hidden field:
    geography other than the constituency, custom fields, has_email and has_phone."""
    stack: list[tuple[Any, str]] = [(dumped, prefix)]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, Mapping):
            continue
        op = node.get("op")
        if op == "geo" and node.get("field") in HIDDEN_GEO_FIELDS:
            yield path
        elif op in ("custom", "has_email", "has_phone"):
            yield path
        for i, child in enumerate(node.get("of") or ()):
            stack.append((child, f"{path}.of.{i}"))
        if "filter" in node:
            stack.append((node["filter"], f"{path}.filter"))
