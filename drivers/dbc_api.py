"""The DbC driver seam: what the harness asks of a DbC driver, whichever driver it is.

Satisfied structurally (no base class to inherit) by the Python driver
(:class:`dbc_harness.drivers.dbc.DbcDriver`) and by a driver run natively
(:mod:`dbc_harness.drivers.native`); the pytest plugin's ``dbc_driver`` on a bench farm is a
remote session that offers the data path only (:class:`TargetStream`). Directions are named from
the target: ``write`` sends target -> host (the DbC's OUT ring), ``read`` returns what the debug
host sent (host -> target, the IN ring).
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol


class TargetStream(Protocol):
    """The target side's data path through a configured DbC."""

    def write(self, data: bytes, timeout: float = ...) -> int:
        """Send one message to the debug host; an id or count (the driver's own meaning)."""
        ...

    def read(self, max_bytes: int = ..., timeout: float = ...) -> bytes:
        """Up to ``max_bytes`` bytes the debug host sent; the driver's timeout error if none."""
        ...


class DbcDriverApi(TargetStream, Protocol):
    """A whole DbC driver: bring-up to Configured, the data path, drain, stop."""

    @property
    def state(self) -> Enum:
        """The driver's state (an enum member; its ``name`` is what summaries print)."""
        ...

    def start(self, timeout: float = ...) -> None:
        """Bring the DbC up until Configured, or raise the driver's error."""
        ...

    def flush(self, timeout: float = ...) -> None:
        """Wait until every accepted message reached the debug host."""
        ...

    def stop(self, timeout: float = ...) -> object:
        """Disable the DbC and give its memory back (what it returns is the driver's own: the
        Python driver returns the messages accepted but not delivered)."""
        ...
