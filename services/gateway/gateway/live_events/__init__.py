"""The live event stream of a caller's subtree (``GET /api/v1/events/stream``, SSE).

The gateway worker records the events dashboards follow (``LIVE_EVENTS`` in the topic
registry) into the gateway's store, numbered in commit order (recorder.py); every API
replica follows that one sequence with one query per poll and fans it out to its
connections, each filtered by role and subtree (service.py). The number is the SSE id, so a
client resumes with ``Last-Event-ID`` on any replica for as long as the events are kept.
"""
