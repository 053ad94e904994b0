"""Custom fields, free of I/O: definitions a federation gives itself (typed text, number,
date or choice) and the validation of the values contacts carry.

A contact's custom fields are checked against the definitions of its federation and of
that federation's ancestors (a child federation sees its parents' fields). Values are
stored normalised: text and choices as cleaned strings, numbers as int or float, dates as
``YYYY-MM-DD`` strings (so the segment language compares them as strings, in date order).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from contacts.filter_language import CUSTOM_FIELD_NAME, MAX_NUMBER, CustomNode, clean_text

NAME = re.compile(CUSTOM_FIELD_NAME)
_FRENCH_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?")

CustomValue = str | int | float


class CustomFieldType(StrEnum):
    text = "text"
    number = "number"
    date = "date"
    choice = "choice"


class CustomFieldDefinition(BaseModel):
    """A custom field of a federation, as stored and returned."""

    model_config = ConfigDict(frozen=True)

    id: str
    federation_id: str
    federation_path: str
    name: str
    label: str
    type: CustomFieldType
    choices: list[str]
    required: bool
    created_at: datetime
    created_by: str


def check_definition(
    name: str,
    type_: CustomFieldType,
    choices: Iterable[str],
    *,
    max_choices: int,
    max_text: int,
) -> tuple[list[str], list[tuple[str, str]]]:
    """The normalised choices and every problem of a new definition."""
    problems: list[tuple[str, str]] = []
    if not NAME.fullmatch(name):
        problems.append(
            ("name", "lowercase letters, digits and '_', starting with a letter, at most 40")
        )
    cleaned: dict[str, None] = {}
    for i, raw in enumerate(choices):
        value = clean_text(raw)
        if not value or len(value) > max_text:
            problems.append((f"choices.{i}", f"must be 1 to {max_text} characters"))
        elif value in cleaned:
            problems.append((f"choices.{i}", "listed twice"))
        cleaned.setdefault(value, None)
    if type_ is CustomFieldType.choice:
        if not cleaned and not any(f.startswith("choices") for f, _ in problems):
            problems.append(("choices", "a choice field needs at least one choice"))
        if len(cleaned) > max_choices:
            problems.append(("choices", f"at most {max_choices} choices"))
    elif cleaned:
        problems.append(("choices", "only a choice field has choices"))
    return list(cleaned), problems


# ---------------------------------------------------------------- values


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, str):
        text = value.strip().replace(" ", "").replace("\u202f", "").replace("\xa0", "")
        if not _NUMBER.fullmatch(text):
            raise ValueError("must be a number")
        text = text.replace(",", ".")
        value = float(text) if any(c in text for c in ".eE") else int(text)
    if not isinstance(value, int | float):
        raise ValueError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if abs(value) > MAX_NUMBER:
        raise ValueError(f"must be between -{MAX_NUMBER:.0e} and {MAX_NUMBER:.0e}")
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 3.0 and 3 are the same number: store one form
    return value


def _date(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if match := _FRENCH_DATE.fullmatch(text):
            day, month, year = (int(g) for g in match.groups())
            try:
                return date(year, month, day).isoformat()
            except ValueError:
                pass
        else:
            try:
                return date.fromisoformat(text).isoformat()
            except ValueError:
                pass
    raise ValueError("must be a date (YYYY-MM-DD or DD/MM/YYYY)")


def normalise_value(definition: CustomFieldDefinition, value: Any, max_text: int) -> CustomValue:
    """A value as stored, or ValueError with the reason."""
    match definition.type:
        case CustomFieldType.number:
            return _number(value)
        case CustomFieldType.date:
            return _date(value)
        case CustomFieldType.text | CustomFieldType.choice:
            if not isinstance(value, str):
                raise ValueError("must be a string")
            text = clean_text(value)
            if not text:
                raise ValueError("must not be blank")
            if len(text) > max_text:
                raise ValueError(f"must be at most {max_text} characters")
            if definition.type is CustomFieldType.choice:
                if text in definition.choices:
                    return text
                folded = {c.casefold(): c for c in definition.choices}
                if text.casefold() in folded:
                    return folded[text.casefold()]
                raise ValueError(f"must be one of {', '.join(definition.choices)}")
            return text
    raise AssertionError(definition.type)  # pragma: no cover


def normalise_custom_fields(
    values: Mapping[str, Any],
    definitions: Mapping[str, CustomFieldDefinition],
    *,
    max_text: int,
    required: bool = True,
    field: str = "custom_fields",
) -> tuple[dict[str, CustomValue], list[tuple[str, str]]]:
    """Validated values (None values are dropped) and every problem, each on
    ``custom_fields.<name>``. With ``required``, every required definition needs a value."""
    out: dict[str, CustomValue] = {}
    problems: list[tuple[str, str]] = []
    for name, value in values.items():
        definition = definitions.get(name)
        if definition is None:
            problems.append((f"{field}.{name}", "unknown custom field"))
            continue
        if value is None:
            continue
        try:
            out[name] = normalise_value(definition, value, max_text)
        except ValueError as exc:
            problems.append((f"{field}.{name}", str(exc)))
    if required:
        for name, definition in definitions.items():
            if definition.required and name not in out and name not in values:
                problems.append((f"{field}.{name}", "required"))
            elif definition.required and name in values and values[name] is None:
                problems.append((f"{field}.{name}", "required"))
    return out, problems


def check_filter_node(
    path: str, node: CustomNode, definitions: Mapping[str, CustomFieldDefinition]
) -> list[tuple[str, str]]:
    """Problems of a filter's custom-field comparison against the definitions: the field
    must exist and the compared values must be of its type (a date as YYYY-MM-DD, a
    choice among its choices), else the comparison could never match."""
    definition = definitions.get(node.name)
    if definition is None:
        return [(f"{path}.name", f"unknown custom field {node.name!r}")]
    if node.cmp == "exists":
        return []
    values = node.value if isinstance(node.value, list) else [node.value]
    for value in values:
        reason = _filter_value_problem(definition, node.cmp, value)
        if reason:
            return [(f"{path}.value", reason)]
    return []


def _filter_value_problem(definition: CustomFieldDefinition, cmp: str, value: Any) -> str | None:
    match definition.type:
        case CustomFieldType.number:
            if isinstance(value, str):
                return f"{definition.name} is a number field: compare it with numbers"
        case CustomFieldType.date:
            try:
                if not isinstance(value, str) or date.fromisoformat(value).isoformat() != value:
                    raise ValueError
            except ValueError:
                return f"{definition.name} is a date field: compare it with YYYY-MM-DD dates"
        case CustomFieldType.text | CustomFieldType.choice:
            if not isinstance(value, str):
                return f"{definition.name} is a {definition.type} field: compare it with text"
            if (
                definition.type is CustomFieldType.choice
                and cmp in ("eq", "in")
                and value not in definition.choices
            ):
                return f"{value!r} is not one of {', '.join(definition.choices)}"
    return None


def coerce_query_value(definition: CustomFieldDefinition, raw: str, max_text: int) -> CustomValue:
    """A value typed in a query string (``cf.<name>=...``), read as the field's type."""
    return normalise_value(definition, raw, max_text)
