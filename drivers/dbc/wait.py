"""Deadlines on a :class:`~drivers.clock.Clock`: every wait in the driver goes through here.

The back-off starts at ``MIN_STEP`` and doubles up to ``MAX_STEP``, so a wait never spins with a
zero sleep (on a deterministic virtual bench ``clock.sleep`` is what advances the model) and never
oversleeps a real bench by much.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from dbc_harness.drivers.clock import Clock
from dbc_harness.drivers.dbc.errors import DbcTimeout

MIN_STEP = 10e-6
MAX_STEP = 250e-6

T = TypeVar("T")


class Deadline:
    """A point in ``clock`` time ``timeout`` seconds from now."""

    def __init__(self, clock: Clock, timeout: float) -> None:
        if timeout < 0:
            timeout = 0.0
        self.clock = clock
        self.timeout = timeout
        self.at = clock.monotonic() + timeout
        self._step = MIN_STEP

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock.monotonic())

    def expired(self) -> bool:
        return self.clock.monotonic() >= self.at

    def pause(self) -> None:
        """Sleep one back-off step (never past the deadline by more than a step)."""
        self.clock.sleep(self._step)
        self._step = min(self._step * 2, MAX_STEP)

    def progressed(self) -> None:
        """Reset the back-off after progress (the next pause is short again)."""
        self._step = MIN_STEP


def wait_for(
    clock: Clock,
    timeout: float,
    check: Callable[[], T | None],
    what: str,
    *,
    between: Callable[[], None] | None = None,
) -> T:
    """Call ``check`` until it returns something other than None/False; raise
    :class:`DbcTimeout` naming ``what`` when ``timeout`` passes first. ``between`` runs before
    each pause (e.g. draining the event ring)."""
    deadline = Deadline(clock, timeout)
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if deadline.expired():
            raise DbcTimeout(what, timeout)
        if between is not None:
            between()
        deadline.pause()
