"""The clock seam: every wait in the project has a deadline measured on one of these.

Real benches use :data:`REAL_CLOCK`. The virtual bench in deterministic mode hands out a clock
whose ``sleep`` advances the model's virtual time, so the same polling code with the same
deadlines runs unchanged and reproducibly.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds, monotonic."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (on a virtual bench: advance the model)."""
        ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


REAL_CLOCK = RealClock()
