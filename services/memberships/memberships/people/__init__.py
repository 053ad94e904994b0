"""Who a contact is, as far as memberships needs it: the donor identity and tax address a
receipt and the legal lists carry (projected from contact-created / contact-updated)."""

from memberships.people.domain import PersonIdentity
from memberships.people.service import People

__all__ = ["People", "PersonIdentity"]
