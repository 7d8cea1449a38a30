"""How a serving process runs Python's cyclic garbage collector: start-up objects frozen, young
collections less often.

Measured on ``tiergate serve`` at 64 concurrent requests (perf, and ``gc.callbacks``): with CPython's
defaults the collector took ~20% of the proxy's CPU. A young collection ran every 700 net allocations
of container objects (~5 a millisecond), and each one promoted the objects of the requests in flight
at that moment, so a full collection followed every ~0.4 s, ~58 ms each, walking every object the
process holds (modules, the registry, price tables: ~90,000). Almost everything a request allocates is
freed by reference counting when it ends; the collections found next to nothing.

So once start-up is done, what is alive then is frozen (moved out of the collector's generations:
never walked again; it lives as long as the process anyway), and a young collection waits for
``YOUNG_THRESHOLD`` net allocations. Garbage in cycles (an exception and its traceback, a closed
connection's callbacks) is still collected, a little later: the threshold bounds it to a few MB.
``tiergate serve`` does this in each worker (``Settings.tune_gc``); an app built in someone else's
process (the test suite, ``tiergate eval``) leaves that process's collector alone.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect what start-up left, freeze what is alive, and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
