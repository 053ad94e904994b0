"""Campaigns: email and SMS to a segment, at scale, stopped the instant someone says no.

How a campaign flows (the audience is resolved by contacts, the owner of people and of
the segment language; messaging never holds the segment nor the contacts' full records):

1. ``api`` / ``service``: a campaign manager creates a campaign (channel, purpose, a
   template version, a segment or the whole subtree) and launches it, now or at a set
   time. Launching freezes the template version and publishes ``campaign-launched``.
2. contacts (``contacts.audiences``) streams one ``campaign-recipient-selected`` per
   contact, keyed by contact over every partition, then ``campaign-audience-resolved``.
3. ``handlers``: each recipient becomes the message's *intent* (status ``queued``, its id
   derived from campaign and contact: one per pair, whatever is redelivered).
4. ``dispatcher`` (every messaging worker runs one): claims a batch of queued messages
   (``sending``, committed before anything reaches a provider), re-checks every rule from
   messaging's own views right before each small hand-off (consent for the purpose,
   suppression, erasure, caps, quiet hours: ``rules``), renders, hands over through the
   pooled provider, and records outcomes, counters and ``message-*`` events together.
   A worker killed mid-batch leaves its claimed messages ``sending``; after
   ``campaign_claim_timeout_seconds`` another worker sends them again: at most one
   hand-off sub-batch (``campaign_handoff_size``) can be sent twice.
- ``domain``: the campaign's states and rules (pure); ``store``: all database access.
"""
