"""Business gauges of messaging for Prometheus: campaigns that stall.

A campaign is *sending* while its messages go out; it stalls when messages are due (or its
audience has not arrived) and none has been handed to a provider for a while: every
dispatcher stopped, the SMTP relay or the SMS provider refuses everything, the queue is
stuck. ``domain`` says how long a campaign has waited (pure), ``store`` reads the sending
campaigns and whether each has due messages (indexed, a few documents per campaign),
``jobs`` is the worker's periodic round that sets the gauges. The alert
(``TribuneCampaignStalled``, deploy/prometheus/alerts.yml) decides how long is too long.
"""
