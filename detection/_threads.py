"""OpenMP defaults for CPU runs on a machine shared with other work, set before torch loads.

libgomp (the OpenMP runtime of torch's CPU build) by default spins at every barrier for 300000
rounds before it sleeps. With as many threads as cores and one more busy process, a thread that
waits for a descheduled peer spins away its time slice at each of the thousands of parallel
regions of an iteration (`benchmarks/RESULTS.md`, "Threads"). `OMP_WAIT_POLICY=PASSIVE` makes
waiting threads sleep at once. libgomp reads it only when it is loaded, so this must run before
`import torch`: `import detection` does it first (tools import `detection` before torch). A value
the user set is kept, and nothing changes once torch is loaded.
"""

import os
import sys

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_openmp_defaults() -> bool:
    """Set DEFAULTS in os.environ where unset; False (nothing done) when torch is already loaded."""
    if "torch" in sys.modules:
        return False
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    return True
