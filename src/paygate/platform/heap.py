"""A server process's start-up objects, kept out of the cyclic garbage collector's walks.

Before it serves, a gateway process builds about 320,000 objects that live as long as it does:
the modules of FastAPI, Pydantic, SQLAlchemy, numpy and the gateway, their functions, classes
and tables. CPython's collector walks every object of the oldest generation on each full
collection, and under load those come every second or two. On the embedded default under
`end_to_end` load, 13 full collections took 2.1 s of 18 s (about 160 ms each, the event loop
held all that time); with the start-up objects frozen, 16 took 0.05 s (docs/performance.md).

`settle()` is called once a server process has started: it collects what start-up left behind,
then freezes the rest (`gc.freeze`). Frozen objects are still freed by reference counting when
the last reference goes; only a reference cycle among them would never be collected. So this
is for the objects a long-lived process keeps, never for an app that a test starts and drops.

It also lets the youngest generation grow to `YOUNG_THRESHOLD` objects before it is collected
(CPython's default is 700): a request's objects mostly die by reference counting within a
few thousand allocations, so the young collections walked them for nothing. In the same load,
the young collections took 0.66 s at 700 and 0.22 s at 10,000.
"""

from __future__ import annotations

import gc

from paygate.platform.logging import log

YOUNG_THRESHOLD = 10_000


def settle() -> int:
    """Collect start-up's garbage and freeze what is left; the number of objects frozen."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
    frozen = gc.get_freeze_count()
    log.info("process.heap_settled", frozen_objects=frozen)
    return frozen
