"""Delivery feedback: what providers say happened to a message after it was handed over.

- ``domain`` (pure): the three ways feedback arrives, parsed and classified into
  ``Feedback`` (delivered, bounced hard or soft, complained): signed SMS delivery receipts
  (``messaging.sms.receipts``), an ESP's signed JSON events, and DSNs (RFC 3464) or ARF
  complaint reports (RFC 5965) read with the stdlib ``email`` package; and ``decide``, what
  one piece of feedback changes on its message (first time only: providers retry).
- ``store``: every database access (the message log's feedback fields, the receipts that
  came before their message's outcome was recorded).
- ``service``: one transaction per webhook call sets the messages' fields, the campaigns'
  counters and the ``message-delivered`` / ``message-bounced`` / ``message-complained``
  events in the outbox.
- ``api``: the public, signed webhooks (through the gateway's public routes).

Consent acts on the events: a hard bounce puts the address on the suppression list, a
complaint is the person's objection to the message's purpose.
"""
