"""Message templates, free of I/O: what a template may say, what it must say, and how it is
rendered for one person.

Templates are Jinja2 run in an immutable sandbox, and checked on their parsed form before
they are saved, so that what a campaign manager writes can neither reach Python objects
nor fail (or run away) when a worker renders it for the hundred-thousandth recipient:

- only the variables of ``TEMPLATE_VARIABLES``; ``contact`` and ``campaign`` only through
  their fields;
- a contact field that some contacts lack must be given a default
  (``{{ contact.given_name | default("ami") }}``) or be tested first
  (``{% if contact.given_name %}...{% endif %}``);
- no loops, macros, ``{% set %}``, includes, calls, ``%`` or ``**``, and only the filters
  of ``ALLOWED_FILTERS``: a template is a message, not a program, and without these its
  rendering takes time and memory in proportion to its size (``*`` is bounded at run time);
- the elements the law and the platform demand (``REQUIRED``) are printed outside any
  condition: the unsubscribe link (email) or the STOP mention (SMS), why the person
  receives the message (``{{ origin }}``) and who sends it (``{{ sender }}``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from inscriptis import get_text  # type: ignore[import-untyped]
from inscriptis.model.config import ParserConfig  # type: ignore[import-untyped]
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tribune_shared.errors import InvalidField, InvalidFields
from tribune_shared.events.contracts import Channel

from messaging.domain import single_line_problem

#: channels a template can be written for
TEMPLATE_CHANNELS = frozenset({Channel.email, Channel.sms})

#: the fields of ``contact`` (messaging's projection of the person); any may be missing
CONTACT_FIELDS = ("given_name", "family_name", "email", "phone", "federation_name")
#: the fields of ``campaign``; always set
CAMPAIGN_FIELDS = ("name",)
#: every variable a template may use; anything else is refused when it is saved
TEMPLATE_VARIABLES: Mapping[str, str] = {
    "contact": "the recipient: contact.given_name, contact.family_name, contact.email, "
    "contact.phone, contact.federation_name (any may be missing: give a default)",
    "unsubscribe_url": "the recipient's one-click unsubscribe link (email)",
    "origin": "why the person receives the message (where their data comes from)",
    "sender": "who sends the message (the sender identity)",
    "campaign": "the campaign: campaign.name",
}
#: variables that are single values, always set when a template is rendered
_SCALARS = frozenset({"unsubscribe_url", "origin", "sender"})
#: variables read through their fields
_RECORDS: Mapping[str, tuple[str, ...]] = {"contact": CONTACT_FIELDS, "campaign": CAMPAIGN_FIELDS}
#: the contact field a channel's worker never renders without (no address, no message)
ADDRESS_FIELD: Mapping[Channel, str] = {Channel.email: "email", Channel.sms: "phone"}

#: filters a template may use: text shaping whose output is bounded by its input
ALLOWED_FILTERS = frozenset(
    {
        "abs", "capitalize", "count", "d", "default", "e", "escape", "first", "int", "join",
        "last", "length", "lower", "round", "string", "striptags", "title", "trim",
        "truncate", "upper", "urlencode", "wordcount",
    }
)  # fmt: skip
#: filters that keep a required element what it is (``{{ origin | capitalize }}``)
_KEEPING_FILTERS = frozenset({"e", "escape", "trim", "capitalize", "lower", "upper", "title"})
#: ... and those a link survives
_LINK_KEEPING_FILTERS = frozenset({"e", "escape", "trim"})
#: the longest string or list ``*`` may build (a separator line, not a memory bomb); a
#: sandbox bound rather than a product limit
REPEAT_MAX_ITEMS = 1000

#: what a preview shows where a campaign would fill the value in
PREVIEW_ORIGIN = "You receive this message because you gave us your contact details."
PREVIEW_CAMPAIGN_NAME = "Preview"

#: the statements and operators refused, by what the author wrote
_REFUSED_CONSTRUCTS: Mapping[type[nodes.Node], str] = {
    nodes.For: "{% for %} loops",
    nodes.Macro: "macros",
    nodes.CallBlock: "{% call %} blocks",
    nodes.Call: "function and method calls (use filters)",
    nodes.Assign: "{% set %}",
    nodes.AssignBlock: "{% set %}",
    nodes.With: "{% with %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% import %}",
    nodes.Extends: "{% extends %}",
    nodes.Block: "{% block %}",
    nodes.ScopedEvalContextModifier: "{% autoescape %}",
    nodes.EvalContextModifier: "{% autoescape %}",
    nodes.Mod: "the % operator",
    nodes.Pow: "the ** operator",
    nodes.Slice: "slices",
}


class Part(StrEnum):
    subject = "subject"
    html = "html"
    text = "text"


@dataclass(frozen=True)
class TemplateLimits:
    subject_max_chars: int
    part_max_chars: int
    render_max_chars: int
    #: the wording every SMS template must print as is ("STOP", "STOP au 36xxx")
    sms_stop_text: str


@dataclass(frozen=True)
class TemplateContent:
    """A template version's parts, checked; ``text`` derived from ``html`` if asked."""

    subject: str | None
    html: str | None
    text: str
    text_derived: bool = False


@dataclass(frozen=True)
class Rendered:
    """One message for one person (``subject`` and ``html`` are None for SMS)."""

    subject: str | None
    html: str | None
    text: str


class TemplateRenderError(InvalidField):
    """A template could not be rendered for this person (422 at preview; the campaign
    worker refuses the message by rule). ``field`` names the part."""


# ---------------------------------------------------------------- the sandbox


class MissingValue(StrictUndefined):
    """A missing contact field: false in a test and replaced by ``default``; printing it
    (or anything else done with it) fails rather than printing nothing."""

    __slots__ = ()

    def __bool__(self) -> bool:  # type: ignore[override]  # false, where StrictUndefined fails
        return False


class _Sandbox(ImmutableSandboxedEnvironment):
    """No globals (``range`` & co.), only the allowed filters, ``*`` bounded."""

    intercepted_binops = frozenset({"*"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, undefined=MissingValue)
        self.globals.clear()
        self.filters = {k: v for k, v in self.filters.items() if k in ALLOWED_FILTERS}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > REPEAT_MAX_ITEMS:
                        raise SecurityError(
                            f"'*' may build at most {REPEAT_MAX_ITEMS} characters or items"
                        )
        return super().call_binop(context, operator, left, right)


#: HTML is escaped as it is printed; a subject and a text are not HTML
_HTML_ENV = _Sandbox(autoescape=True)
_TEXT_ENV = _Sandbox(autoescape=False)


def _env(part: Part) -> _Sandbox:
    return _HTML_ENV if part is Part.html else _TEXT_ENV


# ---------------------------------------------------------------- checks on the AST


@dataclass
class _Walk:
    """The problems of one part's parsed template."""

    part: Part
    always_set: frozenset[str]  # contact fields every rendering has (the channel's address)
    problems: list[str]

    def refuse(self, reason: str) -> None:
        if reason not in self.problems:
            self.problems.append(reason)

    def visit(self, node: nodes.Node, guarded: frozenset[str], *, test: bool = False) -> None:
        """``guarded``: contact fields known to be set here; ``test``: the node's value is
        only tested for truth (a missing field is then simply false)."""
        refused = _REFUSED_CONSTRUCTS.get(type(node))
        if refused is not None:
            self.refuse(f"{refused} are not allowed in a message template")
            return
        if isinstance(node, nodes.Name):
            self._name(node)
        elif isinstance(node, nodes.Getattr | nodes.Getitem):
            self._field(node, guarded, test=test)
        elif isinstance(node, nodes.If):
            self.visit(node.test, guarded, test=True)
            self._all(node.body, guarded | _set_if_true(node.test))
            self._all(node.elif_, guarded)
            self._all(node.else_, guarded)
        elif isinstance(node, nodes.CondExpr):
            if node.expr2 is None:
                self.refuse("an inline 'if' needs an 'else' (what to print otherwise)")
            self.visit(node.test, guarded, test=True)
            self.visit(node.expr1, guarded | _set_if_true(node.test))
            if node.expr2 is not None:
                self.visit(node.expr2, guarded)
        elif isinstance(node, nodes.Not):
            self.visit(node.node, guarded, test=True)
        elif isinstance(node, nodes.And):
            self.visit(node.left, guarded, test=True)
            self.visit(node.right, guarded | _set_if_true(node.left), test=test)
        elif isinstance(node, nodes.Or):
            # the left side is tested; the right one is the value when it is false
            self.visit(node.left, guarded, test=True)
            self.visit(node.right, guarded, test=test)
        elif isinstance(node, nodes.Filter):
            self._filter(node, guarded)
        elif isinstance(node, nodes.Test):
            kept = node.name in ("defined", "undefined")
            if node.node is not None:
                self.visit(node.node, guarded, test=kept)
            self._all([*node.args, *node.kwargs], guarded)
        else:
            self._all(node.iter_child_nodes(), guarded)

    def _all(self, children: Iterable[nodes.Node], guarded: frozenset[str]) -> None:
        for child in children:
            self.visit(child, guarded)

    def _name(self, node: nodes.Name) -> None:
        if node.name in _RECORDS:
            fields = ", ".join(f"{node.name}.{f}" for f in _RECORDS[node.name])
            self.refuse(f"'{node.name}' is read through its fields: {fields}")
        elif node.name not in _SCALARS:
            known = ", ".join(sorted(TEMPLATE_VARIABLES))
            self.refuse(f"unknown variable '{node.name}' (a template may use: {known})")

    def _field(
        self, node: nodes.Getattr | nodes.Getitem, guarded: frozenset[str], *, test: bool
    ) -> None:
        base = node.node
        if isinstance(node, nodes.Getattr):
            name: object = node.attr
        else:
            name = node.arg.value if isinstance(node.arg, nodes.Const) else None
        if not isinstance(base, nodes.Name) or base.name not in _RECORDS:
            self.refuse(
                "attributes and items are only read from contact and campaign "
                "(e.g. contact.given_name)"
            )
            return
        fields = _RECORDS[base.name]
        if not isinstance(name, str) or name not in fields:
            listed = ", ".join(f"{base.name}.{f}" for f in fields)
            self.refuse(f"unknown field {base.name}.{name} (known: {listed})")
            return
        if base.name == "contact" and not test and name not in guarded | self.always_set:
            self.refuse(
                f"contact.{name} is missing for some contacts: give it a default, e.g. "
                f'{{{{ contact.{name} | default("...") }}}}, or test it first '
                f"({{% if contact.{name} %}}...{{% endif %}})"
            )

    def _filter(self, node: nodes.Filter, guarded: frozenset[str]) -> None:
        if node.name not in ALLOWED_FILTERS:
            allowed = ", ".join(sorted(ALLOWED_FILTERS))
            self.refuse(f"filter '{node.name}' is not allowed (allowed: {allowed})")
        if node.node is not None:  # None in a {% filter %} block
            self.visit(node.node, guarded, test=node.name in ("d", "default"))
        self._all([*node.args, *node.kwargs], guarded)
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            self.refuse("*args and **kwargs are not allowed in a message template")


def _contact_field(node: nodes.Node) -> str | None:
    if (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "contact"
    ):
        return node.attr
    return None


def _set_if_true(test: nodes.Node) -> frozenset[str]:
    """The contact fields ``test`` being true proves set (``contact.x``, ``contact.x is
    defined``, and those of both sides of an ``and``)."""
    if isinstance(test, nodes.And):
        return _set_if_true(test.left) | _set_if_true(test.right)
    if isinstance(test, nodes.Test) and test.name == "defined" and test.node is not None:
        test = test.node
    name = _contact_field(test)
    return frozenset({name}) if name else frozenset()


def _printed(expr: nodes.Node, keeping: frozenset[str]) -> str | None:
    """The variable an expression prints as it is (through ``keeping`` filters), if any."""
    while isinstance(expr, nodes.Filter) and expr.name in keeping and expr.node is not None:
        expr = expr.node
    return expr.name if isinstance(expr, nodes.Name) else None


_HREF_BEFORE = re.compile(r"href\s*=\s*[\"']?\s*$", re.IGNORECASE)


def _unconditional(tree: nodes.Template) -> Iterator[tuple[nodes.Node, nodes.Node | None]]:
    """What the template prints whatever the values: the items of its top-level output
    (outside any condition or block), each with the item printed just before it."""
    for node in tree.body:
        if isinstance(node, nodes.Output):
            before: nodes.Node | None = None
            for item in node.nodes:
                yield item, before
                before = item


def _missing_elements(
    tree: nodes.Template, part: Part, channel: Channel, limits: TemplateLimits
) -> list[str]:
    """The required elements a body part does not print unconditionally."""
    printed: set[str] = set()
    linked = False
    stop = False
    stop_word = re.compile(rf"(?<!\w){re.escape(limits.sms_stop_text)}(?!\w)")
    for item, before in _unconditional(tree):
        if isinstance(item, nodes.TemplateData):
            stop = stop or bool(stop_word.search(item.data))
            continue
        if (name := _printed(item, _KEEPING_FILTERS)) is not None:
            printed.add(name)
        if _printed(item, _LINK_KEEPING_FILTERS) == "unsubscribe_url":
            linked = linked or (
                isinstance(before, nodes.TemplateData) and bool(_HREF_BEFORE.search(before.data))
            )
    missing = []
    if channel is Channel.email and part is Part.html and not linked:
        missing.append(
            'must contain the unsubscribe link as a link, e.g. <a href="{{ unsubscribe_url }}">'
            "Unsubscribe</a>, outside any condition"
        )
    elif channel is Channel.email and part is Part.text and "unsubscribe_url" not in printed:
        missing.append(
            "must contain the unsubscribe link {{ unsubscribe_url }}, outside any condition"
        )
    if channel is Channel.sms and not stop:
        missing.append(
            f"must contain the opt-out mention '{limits.sms_stop_text}' as plain text, outside "
            "any condition"
        )
    if "origin" not in printed:
        missing.append(
            "must say why the person receives the message: {{ origin }}, outside any condition"
        )
    if "sender" not in printed:
        missing.append("must say who sends the message: {{ sender }}, outside any condition")
    return missing


# ---------------------------------------------------------------- saving a template


_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


def text_from_html(html: str) -> str:
    """The text part of an HTML template, itself a template: Jinja's tags are set aside
    (the lexer finds them), the HTML becomes text with inscriptis (links shown as
    ``[label](url)``, so the unsubscribe link stays), and the tags are put back.
    Raises ValueError when the HTML holds the characters used to set tags aside."""
    if "\ue000" in html or "\ue001" in html:
        raise ValueError("holds the private-use characters U+E000 or U+E001")
    tags: list[str] = []
    markup: list[str] = []
    pending: list[str] | None = None
    for _, kind, value in _TEXT_ENV.lex(html):
        if kind == "data":
            markup.append(value)
        elif kind in ("comment_begin", "comment", "comment_end"):
            continue
        elif kind in ("raw_begin", "raw_end"):
            tags.append(value)
            markup.append(f"\ue000{len(tags) - 1}\ue001")
        elif kind in ("variable_begin", "block_begin"):
            pending = [value]
        elif pending is not None:
            pending.append(value)
            if kind in ("variable_end", "block_end"):
                tags.append("".join(pending))
                markup.append(f"\ue000{len(tags) - 1}\ue001")
                pending = None
    text = get_text("".join(markup), ParserConfig(display_links=True))
    return _PLACEHOLDER.sub(lambda m: tags[int(m.group(1))], text).strip() + "\n"


def _parse(source: str, part: Part) -> tuple[nodes.Template | None, list[str]]:
    try:
        return _env(part).parse(source), []
    except TemplateSyntaxError as exc:
        return None, [f"line {exc.lineno}: {exc.message}"]


#: a template is tried before it is saved with every contact field set, then with none but
#: the channel's address
_TRIAL_CONTACT: Mapping[str, str] = {
    "given_name": "Ana",
    "family_name": "Martin",
    "email": "ana.martin@example.org",
    "phone": "+33612345678",
    "federation_name": "Paris",
}


def _part_problems(source: str, part: Part, channel: Channel, limits: TemplateLimits) -> list[str]:
    tree, problems = _parse(source, part)
    if tree is None:
        return problems
    walk = _Walk(part, frozenset({ADDRESS_FIELD[channel]}), problems)
    walk.visit(tree, frozenset())
    if part is not Part.subject:
        problems.extend(_missing_elements(tree, part, channel, limits))
    if problems:
        return problems
    # What no reading of the tree shows (1/0, "a" + 1...) shows when it runs.
    template = _env(part).from_string(source)
    address = ADDRESS_FIELD[channel]
    for contact in (_TRIAL_CONTACT, {address: _TRIAL_CONTACT[address]}):
        try:
            _render_part(
                template,
                part,
                _context(contact, "https://example.org/u?token=t", "origin", "sender", "name"),
                limits.render_max_chars,
            )
        except TemplateRenderError as exc:
            return [exc.message]
    return []


def check_template(
    channel: Channel,
    *,
    subject: str | None,
    html: str | None,
    text: str | None,
    limits: TemplateLimits,
) -> TemplateContent:
    """The parts of a template for ``channel``, checked (every problem of every part at
    once: 422 field + reason), the text derived from the HTML when it is not given."""
    if channel not in TEMPLATE_CHANNELS:
        raise InvalidField("templates are written for email or sms", field="channel")
    problems: list[tuple[str, str]] = []

    def given(value: str | None, part: Part, max_chars: int) -> str | None:
        if value is None:
            return None
        if not value.strip():
            problems.append((part.value, "must not be blank"))
        elif len(value) > max_chars:
            problems.append((part.value, f"must be at most {max_chars} characters"))
        else:
            return value
        return None

    if channel is Channel.sms:
        for part, value in ((Part.subject, subject), (Part.html, html)):
            if value is not None:
                problems.append((part.value, "an SMS has only a text"))
        if text is None:
            problems.append((Part.text.value, "an SMS template needs a text"))
    else:
        if subject is None:
            problems.append((Part.subject.value, "an email template needs a subject"))
        if html is None and text is None:
            problems.append((Part.html.value, "an email template needs an HTML or a text part"))
    subject = given(subject, Part.subject, limits.subject_max_chars)
    html = given(html, Part.html, limits.part_max_chars)
    text = given(text, Part.text, limits.part_max_chars)
    if subject is not None and (problem := single_line_problem(subject)):
        problems.append((Part.subject.value, problem))
    for part, value in ((Part.subject, subject), (Part.html, html), (Part.text, text)):
        if value is not None:
            problems.extend((part.value, p) for p in _part_problems(value, part, channel, limits))
    if problems:
        raise InvalidFields(problems)

    derived = False
    if channel is Channel.email and text is None and html is not None:
        try:
            text = text_from_html(html)
        except ValueError as exc:
            raise InvalidField(f"cannot be derived from the HTML: {exc}", field="html") from exc
        derived = True
        found = _part_problems(text, Part.text, channel, limits)
        if found:
            raise InvalidFields(
                [
                    (Part.text.value, f"derived from the HTML, {p}; give the text part")
                    for p in found
                ]
            )
    assert text is not None  # an SMS without text, an email without both, were refused
    return TemplateContent(subject=subject, html=html, text=text, text_derived=derived)


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class CompiledTemplate:
    """A template version ready to render (compiled once, rendered per person)."""

    channel: Channel
    subject: Template | None
    html: Template | None
    text: Template
    render_max_chars: int


def compile_template(
    channel: Channel,
    *,
    subject: str | None,
    html: str | None,
    text: str,
    render_max_chars: int,
) -> CompiledTemplate:
    """Compile a saved (checked) version's parts."""
    return CompiledTemplate(
        channel=Channel(channel),
        subject=_TEXT_ENV.from_string(subject) if subject is not None else None,
        html=_HTML_ENV.from_string(html) if html is not None else None,
        text=_TEXT_ENV.from_string(text),
        render_max_chars=render_max_chars,
    )


def contact_values(contact: Mapping[str, Any]) -> dict[str, str]:
    """The contact fields a template sees: an absent, empty or blank value is missing
    (``default`` then applies); other keys are not the template's business."""
    values = {}
    for name in CONTACT_FIELDS:
        value = contact.get(name)
        if isinstance(value, str) and value.strip():
            values[name] = value
    return values


def _context(
    contact: Mapping[str, Any], unsubscribe_url: str, origin: str, sender: str, campaign: str
) -> dict[str, Any]:
    return {
        "contact": contact_values(contact),
        "unsubscribe_url": unsubscribe_url,
        "origin": origin,
        "sender": sender,
        "campaign": {"name": campaign},
    }


def _render_part(template: Template, part: Part, context: Mapping[str, Any], max_chars: int) -> str:
    """One part, stopped as soon as it grows beyond ``max_chars``."""
    chunks: list[str] = []
    size = 0
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > max_chars:
                raise TemplateRenderError(
                    f"renders to more than {max_chars} characters", field=part.value
                )
            chunks.append(chunk)
    except TemplateRenderError:
        raise
    except SecurityError as exc:
        raise TemplateRenderError(f"not allowed: {exc}", field=part.value) from exc
    except UndefinedError as exc:
        raise TemplateRenderError(f"a value is missing: {exc.message}", field=part.value) from exc
    except Exception as exc:  # whatever a template expression raised (1/0, "a" + 1...)
        raise TemplateRenderError(f"{type(exc).__name__}: {exc}", field=part.value) from exc
    return "".join(chunks)


def _one_line(value: str) -> str:
    """A rendered subject as one header line: line breaks and control characters (from a
    contact's name, say) become spaces."""
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in value)
    return " ".join(cleaned.split())


def render(
    compiled: CompiledTemplate,
    contact: Mapping[str, Any],
    *,
    unsubscribe_url: str,
    origin: str,
    sender: str,
    campaign_name: str,
) -> Rendered:
    """The message of one person: HTML escaped, subject and text as they are; raises
    TemplateRenderError (field = the part) if a part cannot be rendered."""
    context = _context(contact, unsubscribe_url, origin, sender, campaign_name)
    limit = compiled.render_max_chars
    subject = None
    if compiled.subject is not None:
        subject = _one_line(_render_part(compiled.subject, Part.subject, context, limit))
        if not subject:
            raise TemplateRenderError("renders blank", field=Part.subject.value)
    html = None
    if compiled.html is not None:
        html = _render_part(compiled.html, Part.html, context, limit)
    text = _render_part(compiled.text, Part.text, context, limit)
    return Rendered(subject=subject, html=html, text=text)


class TemplateCache:
    """Compiled versions by key, the least recently used dropped beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], CompiledTemplate] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> CompiledTemplate | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], compiled: CompiledTemplate) -> None:
        self._items[key] = compiled
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


# ---------------------------------------------------------------- the federation tree
