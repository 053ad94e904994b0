"""Build step: the services' OpenAPI parts the gateway publishes (``make openapi``).

Each service's document is generated from its own FastAPI app (nothing started, nothing
connected) and cut down to what the gateway routes to it (gateway.openapi.published_part);
the result is committed as ``services/gateway/gateway/openapi_services.json`` and merged
into the gateway's ``/openapi.json`` at start. Run in the workspace, which holds every
service; tests/contract/test_openapi.py fails while the committed file is stale.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import FastAPI
from gateway.openapi import SERVICES_DOCUMENT, published_part


def _apps() -> dict[str, FastAPI]:
    # Development settings: the documents do not depend on secrets, and the published
    # development defaults are refused in production on purpose.
    from consent.main import create_app as consent_app
    from consent.settings import ConsentSettings
    from contacts.main import create_app as contacts_app
    from contacts.settings import ContactsSettings
    from memberships.main import create_app as memberships_app
    from memberships.settings import MembershipsSettings
    from messaging.main import create_app as messaging_app
    from messaging.settings import MessagingSettings

    dev: dict[str, Any] = {"environment": "development"}
    return {
        "contacts": contacts_app(ContactsSettings(**dev)),
        "consent": consent_app(ConsentSettings(**dev)),
        "memberships": memberships_app(MembershipsSettings(**dev)),
        "messaging": messaging_app(MessagingSettings(**dev)),
    }


def render() -> str:
    parts = {name: published_part(name, app.openapi()) for name, app in _apps().items()}
    return json.dumps(parts, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args == ["--write"]:
        SERVICES_DOCUMENT.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
