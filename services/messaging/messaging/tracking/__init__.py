"""Open and click tracking of campaign emails (issue 10, "Feedback").

- ``domain``: signed click/open tokens, rewriting a rendered email's links through the
  click redirect and adding the open pixel (only for people who consented to tracking),
  and what a batch of hits counts (pure);
- ``service``: the public routes' hits, buffered and written in batches (aggregate
  counters always; per person only with tracking consent at send time and now);
- ``store``: all database access; ``api``: the public routes (``/api/v1/public/t``).

The dispatcher calls ``link_tracker(settings).tracked(html, text, message_id=...,
campaign_id=..., tracking_allowed=...)`` for each email it hands over.
"""
