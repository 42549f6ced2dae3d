"""Property tests (hypothesis): bad input, found by a machine. Imported by every test here.

Two profiles, chosen by HYPOTHESIS_PROFILE:
- ``default`` (`make test`): derandomized (the same examples every run, so CI never flakes on a
  new draw), no deadline (a loaded CI machine is not a bug), a few hundred examples in all.
- ``fuzz`` (`make fuzz`): random, and every test's budget multiplied so that the whole run
  draws ~100,000 examples.

Each test states its share with ``examples(n)``; `make fuzz` multiplies every share by
``FUZZ_FACTOR``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# The tests share one emulator and one isolated environment per test function, not per example
# (nothing they do may leave state behind that the next example would notice: they never rent).
_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.load_profile(PROFILE)

# Examples per test in `make test`: search 120 + 60 + 20, CLI offers 30 + up 20 + run 20,
# config 60: 330 (~12 s of one worker). `make fuzz` multiplies them by 303: 99,990 in all.
# FUZZ_FACTOR=30 in the environment: a tenth of it.
FUZZ_FACTOR = int(os.environ.get("FUZZ_FACTOR", "303"))


def examples(n: int) -> int:
    """This test's share of examples: ``n`` in `make test`, ``n * FUZZ_FACTOR`` in `make fuzz`."""
    return n * FUZZ_FACTOR if PROFILE == "fuzz" else n
