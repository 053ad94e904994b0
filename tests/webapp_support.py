"""What the back office's template tests share: a page rendered as the gateway renders it
(the same translations and number/date formats), with strict undefined variables so a
template that needs a value the test forgot fails.

Importable as ``webapp_support`` (tests/ is on pytest's ``pythonpath``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gateway.webapp
from gateway.webapp.i18n import format_cents, format_date, format_int, format_percent, translator
from gateway.webapp.screens import GEO_FIELDS, PRESENCE, SEGMENT_EDITORS, TAG_MATCHES, SegmentForm
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(gateway.webapp.__file__).parent / "templates"


def render_page(
    template: str,
    lang: str = "fr",
    /,
    *,
    me: Mapping[str, Any],
    menu: Sequence[str],
    **context: Any,
) -> str:
    """``template`` in ``lang`` for the signed-in user ``me`` whose menu is ``menu``."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
    )
    return env.get_template(template).render(
        t=translator(lang),
        lang=lang,
        other_lang="en",
        other_lang_name="English",
        here="/app/x",
        csrf_field="csrf_token",
        csrf_token="tok",
        static="/app/static",
        fmt_int=lambda v: format_int(int(v or 0), lang),
        fmt_cents=lambda v: format_cents(int(v or 0), lang),
        fmt_percent=lambda v: format_percent(float(v or 0), lang),
        fmt_date=lambda v: format_date(v, lang),
        me=me,
        menu=tuple(menu),
        **context,
    )


def segment_page(segment: Mapping[str, Any], **over: Any) -> dict[str, Any]:
    """The context of one segment's page (segment.html) as the screen gives it: the segment,
    its edit form filled from it, no errors or notice; ``over`` replaces any of it."""
    return {
        "active": "segments",
        "segment": segment,
        "preview": {"count": 12, "sample": []},
        "form": SegmentForm.of_segment(dict(segment)),
        "errors": [],
        "changed": False,
        "editors": SEGMENT_EDITORS,
        "tag_matches": TAG_MATCHES,
        "geo_fields": GEO_FIELDS,
        "presence": PRESENCE,
        "notice": None,
        **over,
    }
