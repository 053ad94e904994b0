"""Use cases: a contact and its event commit together (transactional outbox)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.client_info import ClientInfo
from tribune_shared.errors import Conflict, Forbidden, NotFound, Refused
from tribune_shared.events import utcnow
from tribune_shared.events.contracts import DataOrigin
from tribune_shared.federations import FederationDirectory
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store, subtree_filter

from contacts.bulk_reads import BulkReads
from contacts.custom_fields import (
    CustomFieldDefinition,
    CustomFieldType,
    check_definition,
    check_filter_node,
    coerce_query_value,
    normalise_custom_fields,
)
from contacts.domain import (
    Contact,
    ContactFields,
    ContactRules,
    InvalidFields,
    build_contact,
    changed_fields,
    check_origin,
    contact_created,
    contact_updated,
    decode_page_cursor,
    encode_page_cursor,
    new_contact_id,
    normalise_contact,
    normalise_tag,
    parse_sort,
    search_terms,
    sort_value,
)
from contacts.field_view import ContactView, hidden_list_filters, sees_details, view_of
from contacts.filter_language import (
    DateNode,
    Filter,
    GeoNode,
    HasEmailNode,
    HasPhoneNode,
    TagsNode,
    compile_filter,
    custom_nodes,
    federation_nodes,
    normalise_code,
)
from contacts.settings import ContactsSettings
from contacts.store import ContactStore, CustomFieldStore
from contacts.suppression import SuppressionList

log = get_logger(__name__)

#: the fields of a contact a PATCH may change (besides custom_fields and federation_id)
PATCHABLE = (
    "given_name",
    "family_name",
    "emails",
    "phones",
    "address",
    "constituency",
    "polling_station",
    "birth_year",
    "tags",
)


def _now_ms() -> datetime:
    """Now, at the store's precision (BSON dates are milliseconds): what a create
    returns is exactly what a later read returns."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _duplicate(field: str, existing_id: str | None) -> Conflict:
    return Conflict(
        f"a contact with the same {field} already exists in this federation",
        existing_id=existing_id,
        conflicting_field=field,
    )


@dataclass(frozen=True)
class ContactChanges:
    """A partial update: only the fields given change (``values`` holds raw values of
    PATCHABLE fields); custom field values merge by name (None removes one)."""

    values: Mapping[str, Any] = field(default_factory=dict)
    custom_fields: Mapping[str, Any] | None = None
    federation_id: str | None = None


@dataclass(frozen=True)
class ListFilters:
    """The list endpoint's filters (each list means "any of")."""

    tags_any: Sequence[str] = ()
    tags_all: Sequence[str] = ()
    tags_none: Sequence[str] = ()
    postcode: Sequence[str] = ()
    commune_insee: Sequence[str] = ()
    department: Sequence[str] = ()
    constituency: Sequence[str] = ()
    polling_station: Sequence[str] = ()
    federation_id: str | None = None
    updated_since: datetime | None = None
    has_email: bool | None = None
    has_phone: bool | None = None
    #: custom field name -> value as typed in the query string (equality)
    custom: Mapping[str, str] = field(default_factory=dict)


class ContactsService:
    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.contacts = ContactStore(store)
        self.custom_fields = CustomFieldStore(store)
        self.outbox = Outbox(store)
        self.directory = FederationDirectory(store)
        self.suppression = SuppressionList(store, settings.suppression_salt)
        self.bulk_reads = BulkReads(settings, store)
        self.rules = ContactRules(
            region=settings.default_region,
            max_name_length=settings.max_name_length,
            max_tags=settings.max_tags,
            max_tag_length=settings.max_tag_length,
            max_emails=settings.max_emails,
            max_phones=settings.max_phones,
            max_address_lines=settings.max_address_lines,
            max_address_line_length=settings.max_address_line_length,
            max_code_length=settings.max_code_length,
            min_birth_year=settings.min_birth_year,
        )

    # ------------------------------------------------------------ races

    async def _duplicate_after_race(self, contact: Contact, *, stored: bool = False) -> Conflict:
        """The 409 for a create/update the unique indexes refused (a concurrent write
        committed the same email/phone after our check); nothing of ours was written.
        ``Store.run_transaction`` never retries a DuplicateKeyError (it is no write
        conflict: running again would only find the duplicate), so it reaches the caller."""
        emails = [e.address for e in contact.emails]
        phones = [p.number for p in contact.phones]
        if stored:  # an update: the contact itself holds some of them
            existing = await self.contacts.find_duplicate(
                contact.federation_id, emails, phones, exclude_id=contact.id
            )
        else:
            existing = await self.contacts.find_duplicate(contact.federation_id, emails, phones)
        field_name, existing_id = existing or ("email or phone", None)
        return _duplicate(field_name, existing_id)

    # ------------------------------------------------------------ create / read / update

    async def create(
        self,
        identity: Identity,
        raw: ContactFields,
        origin: DataOrigin,
        federation_id: str | None = None,
    ) -> Contact:
        """Validate, place in a federation of the caller's subtree, refuse duplicates,
        store and emit contact-created, all or nothing."""
        problems: list[tuple[str, str]] = []
        try:
            fields = normalise_contact(raw, self.rules)
        except InvalidFields as exc:
            problems, fields = list(exc.problems), None
        now = _now_ms()
        check_origin(origin, now.date())
        fed_id, fed_path = await self.directory.resolve(identity, federation_id)
        definitions = await self.custom_fields.applicable(fed_path)
        custom, custom_problems = normalise_custom_fields(
            raw.custom_fields, definitions, max_text=self.settings.max_custom_text_length
        )
        problems += custom_problems
        if problems or fields is None:
            raise InvalidFields(problems)
        contact = build_contact(
            contact_id=new_contact_id(),
            federation=(fed_id, fed_path),
            version=1,
            fields=fields,
            custom=custom,
            origin=origin,
            created=(now, identity.user_id),
            updated=(now, None),
        )
        if await self.suppression.matches(
            [e.address for e in contact.emails], [p.number for p in contact.phones]
        ):
            # On the suppression list (objected to everything, or erased): kept, flagged,
            # never reachable (consent refuses any grant, messaging any send).
            contact = contact.model_copy(update={"suppressed": True})
        event = contact_created(contact, self.settings.service_name)

        async def insert(session: AsyncClientSession) -> Contact:
            existing = await self.contacts.find_duplicate(
                fed_id,
                [e.address for e in contact.emails],
                [p.number for p in contact.phones],
                session,
            )
            if existing is not None:
                raise _duplicate(*existing)
            await self.contacts.insert(contact, session)
            await self.outbox.add(session, event)
            return contact

        try:
            return await self.store.run_transaction(insert, what="contacts.create")
        except DuplicateKeyError:
            raise await self._duplicate_after_race(contact) from None

    async def get(
        self, identity: Identity, contact_id: str, client: ClientInfo | None = None
    ) -> ContactView:
        """One contact as the caller's role may see it (counted as a read: bulk_reads)."""
        contact = await self.contacts.get(identity, contact_id)
        if contact is None:
            raise NotFound("contact not found")
        await self.bulk_reads.count(identity, pages=0, contacts=1, client=client)
        return self.view(identity, contact)

    def view(self, identity: Identity, contact: Contact) -> ContactView:
        """What the caller's role may see of a contact (contacts.field_view)."""
        return view_of(contact, identity, self.settings.contact_details_roles)

    def sees_details(self, identity: Identity) -> bool:
        return sees_details(identity, self.settings.contact_details_roles)

    async def update(
        self,
        identity: Identity,
        contact_id: str,
        changes: ContactChanges,
        expected_version: int,
    ) -> Contact:
        """Apply a partial update to the version the caller read (else 409), with the
        rules of create; version + 1 and contact-updated (full state and the changed
        fields) in one transaction. A change that changes nothing writes nothing."""
        unknown = set(changes.values) - set(PATCHABLE)
        if unknown:
            raise InvalidFields([(name, "cannot be changed") for name in sorted(unknown)])
        target: tuple[str, str] | None = None
        if changes.federation_id is not None:
            target = await self.directory.resolve(identity, changes.federation_id)
        attempted: list[Contact] = []

        async def change(session: AsyncClientSession) -> Contact:
            current = await self.contacts.get_in(identity.scope(), contact_id, session)
            if current is None:
                raise NotFound("contact not found")
            if current.version != expected_version:
                raise Conflict(
                    "the contact changed since you read it: read it again",
                    current_version=current.version,
                )
            updated, changed = await self._apply(identity, current, changes, target)
            if not changed:
                return current
            existing = await self.contacts.find_duplicate(
                updated.federation_id,
                [e.address for e in updated.emails],
                [p.number for p in updated.phones],
                session,
                exclude_id=updated.id,
            )
            if existing is not None:
                raise _duplicate(*existing)
            attempted.append(updated)
            if not await self.contacts.replace(updated, expected_version, session):
                raise Conflict(
                    "the contact changed since you read it: read it again",
                    current_version=None,
                )
            event = contact_updated(updated, changed, self.settings.service_name)
            await self.outbox.add(session, event)
            return updated

        try:
            return await self.store.run_transaction(change, what="contacts.update")
        except DuplicateKeyError:
            raise await self._duplicate_after_race(attempted[-1], stored=True) from None

    async def _apply(
        self,
        identity: Identity,
        current: Contact,
        changes: ContactChanges,
        target: tuple[str, str] | None,
    ) -> tuple[Contact, list[str]]:
        """The contact with the changes applied and validated, and what changed."""
        raw = dataclasses.replace(current.fields(), **dict(changes.values))
        problems: list[tuple[str, str]] = []
        try:
            fields = normalise_contact(raw, self.rules)
        except InvalidFields as exc:
            problems, fields = list(exc.problems), None
        fed_id, fed_path = target or (current.federation_id, current.federation_path)
        definitions = await self.custom_fields.applicable(fed_path)
        merged = dict(current.custom_fields)
        for name, value in (changes.custom_fields or {}).items():
            definition = definitions.get(name)
            if value is None and definition is not None and definition.required:
                problems.append((f"custom_fields.{name}", "required"))
            if value is None:
                merged.pop(name, None)
                if definition is None:
                    problems.append((f"custom_fields.{name}", "unknown custom field"))
            else:
                merged[name] = value
        custom, custom_problems = normalise_custom_fields(
            merged,
            definitions,
            max_text=self.settings.max_custom_text_length,
            required=False,
        )
        problems += custom_problems
        if problems or fields is None:
            raise InvalidFields(problems)
        now = _now_ms()
        updated = build_contact(
            contact_id=current.id,
            federation=(fed_id, fed_path),
            version=current.version + 1,
            fields=fields,
            custom=custom,
            origin=current.origin,
            created=(current.created_at, current.created_by),
            updated=(max(now, current.updated_at), identity.user_id),
        )
        if current.suppressed:  # the suppression flag stays (contacts.suppression)
            updated = updated.model_copy(update={"suppressed": True})
        return updated, changed_fields(current, updated)

    # ------------------------------------------------------------ list

    async def list_page(
        self,
        identity: Identity,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        q: str | None = None,
        tag: str | None = None,
        filters: ListFilters | None = None,
        sort: str | None = None,
        client: ClientInfo | None = None,
    ) -> tuple[list[ContactView], str | None]:
        """A page of the caller's subtree, as its role may see it, and the cursor of the
        next one (None at the end). A restricted role searches names only and may not
        filter on what it does not see (403); every page counts as a read (bulk_reads)."""
        filters = filters or ListFilters()
        details = self.sees_details(identity)
        if not details:
            hidden = hidden_list_filters(
                {
                    name: getattr(filters, name)
                    for name in ("postcode", "commune_insee", "department", "polling_station")
                },
                filters.custom,
                {"has_email": filters.has_email, "has_phone": filters.has_phone},
            )
            if hidden:
                raise Forbidden(
                    f"role {identity.role} may not filter on fields it does not see",
                    field=hidden[0],
                    fields=hidden,
                )
        limit = self.settings.default_page_size if limit is None else limit
        if not 1 <= limit <= self.settings.max_page_size:
            raise InvalidFields([("limit", f"must be between 1 and {self.settings.max_page_size}")])
        order = parse_sort(sort)
        after_value, after = (
            decode_page_cursor(cursor, order) if cursor is not None else (None, None)
        )
        terms = (
            search_terms(q, self.settings.default_region, self.settings.max_search_words)
            if q is not None
            else None
        )
        if tag is not None:
            tag = self._tags("tag", [tag])[0]
        scope, conditions = await self._list_conditions(identity, filters)
        items, more = await self.contacts.page(
            identity,
            limit=limit,
            after=after,
            after_value=after_value,
            terms=terms,
            tag=tag,
            scope=scope,
            conditions=conditions,
            order=order,
            names_only=not details,
        )
        await self.bulk_reads.count(identity, pages=1, contacts=len(items), client=client)
        views = [self.view(identity, c) for c in items]
        if not more:
            return views, None
        return views, encode_page_cursor(order, sort_value(items[-1], order), items[-1].id)

    def _tags(self, name: str, values: Sequence[str]) -> list[str]:
        try:
            return [normalise_tag(v, self.settings.max_tag_length) for v in values]
        except ValueError as exc:
            raise InvalidFields([(name, str(exc))]) from None

    async def _list_conditions(
        self, identity: Identity, filters: ListFilters
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The scope (the caller's subtree, or a federation of it) and the conditions of
        the list filters, compiled by the segment language."""
        nodes: list[Filter] = []
        problems: list[tuple[str, str]] = []
        for match in ("any", "all", "none"):
            values = getattr(filters, f"tags_{match}")
            if values:
                nodes.append(
                    TagsNode(op="tags", match=match, tags=self._tags(f"tags_{match}", values))
                )
        for name in ("postcode", "commune_insee", "department", "constituency", "polling_station"):
            values = list(getattr(filters, name))
            if not values:
                continue
            if any(not normalise_code(v) for v in values):
                problems.append((name, "must not be blank"))
            elif len(values) > self.settings.segment_max_values:
                problems.append((name, f"at most {self.settings.segment_max_values} values"))
            else:
                nodes.append(GeoNode(op="geo", field=name, values=values))
        if filters.updated_since is not None:
            nodes.append(DateNode(op="date", field="updated_at", since=filters.updated_since))
        if filters.has_email is not None:
            nodes.append(HasEmailNode(op="has_email", value=filters.has_email))
        if filters.has_phone is not None:
            nodes.append(HasPhoneNode(op="has_phone", value=filters.has_phone))
        conditions = [compile_filter(n) for n in nodes]
        if filters.custom:
            definitions = await self.definitions_by_name(identity)
            for name, raw in filters.custom.items():
                definition = definitions.get(name)
                if definition is None:
                    problems.append((f"cf.{name}", "unknown custom field"))
                    continue
                try:
                    value = coerce_query_value(
                        definition, raw, self.settings.max_custom_text_length
                    )
                except ValueError as exc:
                    problems.append((f"cf.{name}", str(exc)))
                    continue
                conditions.append({f"custom_fields.{name}": value})
        if problems:
            raise InvalidFields(problems)
        scope = identity.scope()
        if filters.federation_id is not None:
            _, path = await self.directory.resolve(identity, filters.federation_id)
            scope = subtree_filter(path)
        return scope, conditions

    # ------------------------------------------------------------ filters (segments, export)

    async def definitions_by_name(self, identity: Identity) -> dict[str, CustomFieldDefinition]:
        """Every custom field the caller may filter on (its ancestors' and its subtree's);
        a name is defined once along a branch of the tree."""
        return {d.name: d for d in await self.custom_fields.visible(identity)}

    async def check_filter(self, identity: Identity, flt: Filter, field_name: str) -> None:
        """A filter's references make sense for the caller: its federations are in the
        caller's subtree (else 404 naming the node) and its custom-field comparisons name
        known fields with values of their type (else 422)."""
        for path, node in federation_nodes(flt, field_name):
            if node.federation_id == identity.federation_id:
                continue
            try:
                await self.directory.resolve(identity, node.federation_id)
            except NotFound:
                raise NotFound("federation not found", field=f"{path}.federation_id") from None
        nodes = list(custom_nodes(flt, field_name))
        if not nodes:
            return
        definitions = await self.definitions_by_name(identity)
        problems = [p for path, node in nodes for p in check_filter_node(path, node, definitions)]
        if problems:
            raise InvalidFields(problems)

    # ------------------------------------------------------------ custom field definitions

    async def define_field(
        self,
        identity: Identity,
        *,
        name: str,
        label: str,
        type_: CustomFieldType,
        choices: Sequence[str],
        required: bool,
        federation_id: str | None = None,
    ) -> CustomFieldDefinition:
        """A new custom field for a federation of the caller's subtree (its own by
        default); one name per branch of the tree (409 if an ancestor or a descendant
        already defines it)."""
        cleaned, problems = check_definition(
            name,
            type_,
            choices,
            max_choices=self.settings.max_custom_field_choices,
            max_text=self.settings.max_custom_text_length,
        )
        if problems:
            raise InvalidFields(problems)
        fed_id, fed_path = await self.directory.resolve(identity, federation_id)
        if await self.custom_fields.count(fed_id) >= self.settings.max_custom_fields:
            raise Refused(
                f"a federation may define at most {self.settings.max_custom_fields} custom fields"
            )
        existing = await self.custom_fields.around(fed_path, name)
        if existing is not None:
            raise Conflict(
                f"custom field {name!r} is already defined on this branch of the federation tree",
                existing_id=existing.id if identity.can_see(existing.federation_path) else None,
            )
        definition = CustomFieldDefinition(
            id=uuid.uuid4().hex,
            federation_id=fed_id,
            federation_path=fed_path,
            name=name,
            label=label.strip() or name,
            type=type_,
            choices=cleaned,
            required=required,
            created_at=_now_ms(),
            created_by=identity.user_id,
        )
        try:
            await self.custom_fields.insert(definition)
        except DuplicateKeyError:
            raise Conflict(f"custom field {name!r} is already defined") from None
        return definition

    async def list_fields(self, identity: Identity) -> list[CustomFieldDefinition]:
        return await self.custom_fields.visible(identity)

    async def delete_field(self, identity: Identity, definition_id: str) -> None:
        """Only a field no contact holds a value for (the values would lose their type)."""
        definition = await self.custom_fields.get(identity, definition_id)
        if definition is None:
            raise NotFound("custom field not found")
        holders = await self.contacts.with_custom_value(definition.federation_path, definition.name)
        if holders:
            raise Refused(
                f"{holders} contact(s) hold a value for {definition.name!r}: clear them first",
                contacts=holders,
            )
        await self.custom_fields.delete(definition_id)
