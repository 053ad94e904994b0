"""Meetings and canvassing sessions: RSVPs, check-in on the day, attendance, reminders.

Contacts owns them: attendance joins the person's history and is used in segments, which
contacts owns (the filter language's ``attended`` node reads the summary kept on the
contact document at check-in).

- ``domain``: pure rules (validation, capacity and waiting list, reminder due, the
  attendance summary);
- ``store``: every database access (meetings, registrations, reminder markers, the
  contacts' attendance summary);
- ``service``: the use cases of the API, ``record_rsvps`` (called by contacts.submissions
  in its transaction) and the reminder job of the worker;
- ``api``: the routes under ``/api/v1/meetings``.
"""
