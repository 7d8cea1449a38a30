"""How a serving process sets up the interpreter: the cyclic garbage collector (start-up objects
frozen, young collections less often) and the GIL's switch interval.

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
The ledger's writer thread takes the GIL back after each SQLite statement (the sqlite3 module
releases it around every step). While the event loop keeps the GIL busy, CPython makes a waiting
thread wait a switch interval (5 ms by default) before it asks for it: with ~10 statements a batch,
a saturated loop held a batch's commit back by up to ~50 ms, and ``kill -9`` then lost more than 100 ms
of answered rows. A 1 ms interval bounds that at ~10 ms; the loop is asked to let go at most 1,000
times a second, and only while another thread wants the GIL.

``tiergate serve`` does this in each worker (``Settings.tune_runtime``); an app built in someone else's
process (the test suite, ``tiergate eval``) leaves that process's interpreter alone.
"""

from __future__ import annotations

import gc
import sys

YOUNG_THRESHOLD = 10_000
SWITCH_INTERVAL_S = 0.001


def settle() -> None:
    """Collect what start-up left, freeze what is alive, raise the young generation's threshold, and
    shorten the GIL's switch interval."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
