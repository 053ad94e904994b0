"""The garbage collector of a Tribune process, tuned once at its entry point.

Python's cyclic collector runs every ``gen0`` container allocations (700 by default) and
walks, at each full collection, every object the process holds: about 97,000 for an API
after its imports (FastAPI, pydantic's schemas, PyMongo, the contracts), none of them ever
garbage. A request allocates thousands of containers, so collections ran several times
per request and a full one now and then stalled whichever requests were in flight: the
person view's tail (bench/person_view.py, README). Freezing what exists at start moves it
out of every collection's walk (``gc.freeze``); a larger first threshold makes the young
collections rarer, each still cheap. Cycles are still collected, later.

Only process entry points call this (``serve``, ``run_worker``): a frozen object is never
freed, so a test process building many apps must not freeze each one.
"""

from __future__ import annotations

import gc

from tribune_shared.settings import ServiceSettings


def tune_gc(settings: ServiceSettings) -> None:
    if settings.gc_freeze_at_start:
        gc.collect()  # what is garbage already is not frozen with the rest
        gc.freeze()
    gc.set_threshold(
        settings.gc_gen0_threshold, settings.gc_gen1_threshold, settings.gc_gen2_threshold
    )
