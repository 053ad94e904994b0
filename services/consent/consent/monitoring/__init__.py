"""Business gauges of consent for Prometheus: privacy requests nearing or past their legal
deadline (GDPR art. 12(3): answered within one month of receipt).

``store`` reads the open requests' figures per kind in two aggregations over the
``(status, deadline)`` index (not one read per request), ``domain`` turns them into
the gauges' values (pure), ``jobs`` is the worker's periodic round. The alerts
(``TribuneErasureRequestsDueSoon``, ``TribuneErasureRequestsOverdue``,
deploy/prometheus/alerts.yml) say how close to the deadline is too close.
"""
