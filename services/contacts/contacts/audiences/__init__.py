"""Campaign audiences: contacts answers ``campaign-launched`` with the campaign's recipients.

Contacts owns people and the segment language, so it resolves a campaign's segment (within
the campaign's federation subtree) and streams one ``campaign-recipient-selected`` event per
contact, keyed by contact, then ``campaign-audience-resolved``. Messaging records each
message's intent and re-checks every rule (consent, suppression, erasure, caps, quiet
hours) on its own views when it sends. Messaging never needs the segment language nor the
contacts' full records.

- ``domain``: which contacts, within which scope (pure);
- ``store``: the audience jobs and the paging of matching contacts;
- ``handlers``: ``campaign-launched`` records a job (idempotent);
- ``jobs``: the worker loop that resolves jobs page by page, each page's events and the
  job's cursor committed together (a crash resumes where it stopped, nothing twice).
"""
