"""Public forms: petitions, sign-ups, volunteer forms and event RSVPs (issue 14).

Contacts owns forms because a form is how a person enters the file: contacts owns people
and the origin of their data; consent owns the texts and the proof (contacts keeps a copy
of the texts to show them). The page answers while its submissions queue: accept, then
apply through the backbone (contacts.submissions).

- ``domain``: what a definition may hold, reading answers, the abuse rules (pure);
- ``store``: definitions, the copy of consent texts, the queued submissions;
- ``service``: the back office's use cases and the public intake;
- ``api``: ``/api/v1/forms`` (back office); ``public_api``: ``/api/v1/public/forms``;
- ``pages`` and ``static/``: the public page (HTML, CSS, the proof-of-work script);
- ``handlers``: ``consent-text-published`` -> the copy of the texts.
"""
