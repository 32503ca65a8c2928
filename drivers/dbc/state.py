"""The driver's one state enum and the one place where it changes (like Linux xhci-dbgcap.c).

Every transition is checked against :data:`ALLOWED`, logged (``logging`` logger
``drivers.dbc``), sent to the trace sink as a ``"state"`` record and passed to the optional
``on_state(old, new)`` callback.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from dbc_harness.drivers.dbc.errors import DbcStateError
from dbc_harness.drivers.tracing import TraceSink, null_sink

log = logging.getLogger("dbc_harness.drivers.dbc")


class DbcState(enum.Enum):
    """Driver view of the DbC (Linux: DS_DISABLED .. DS_CONFIGURED).

    * ``DISABLED``: nothing allocated, DCE not set by us.
    * ``INITIALIZED``: rings, context and strings allocated and programmed, DCE not yet set.
    * ``ENABLED``: DCE = 1, waiting for a debug host (DCPORTSC.CCS = 0).
    * ``CONNECTED``: DCPORTSC.CCS = 1, waiting for the host to configure us (DCCTRL.DCR = 0).
    * ``CONFIGURED``: DCCTRL.DCR = 1: data flows.
    * ``REMOVED``: surprise removal (all-ones reads); terminal until ``stop()``.
    """

    DISABLED = "disabled"
    INITIALIZED = "initialized"
    ENABLED = "enabled"
    CONNECTED = "connected"
    CONFIGURED = "configured"
    REMOVED = "removed"


_S = DbcState
ALLOWED: dict[DbcState, frozenset[DbcState]] = {
    _S.DISABLED: frozenset({_S.INITIALIZED, _S.REMOVED}),
    _S.INITIALIZED: frozenset({_S.ENABLED, _S.DISABLED, _S.REMOVED}),
    _S.ENABLED: frozenset({_S.CONNECTED, _S.CONFIGURED, _S.INITIALIZED, _S.DISABLED, _S.REMOVED}),
    _S.CONNECTED: frozenset({_S.CONFIGURED, _S.ENABLED, _S.INITIALIZED, _S.DISABLED, _S.REMOVED}),
    _S.CONFIGURED: frozenset({_S.ENABLED, _S.CONNECTED, _S.INITIALIZED, _S.DISABLED, _S.REMOVED}),
    _S.REMOVED: frozenset({_S.DISABLED}),
}

StateCallback = Callable[[DbcState, DbcState], None]


class StateMachine:
    """Holds the current :class:`DbcState`; :meth:`to` is the only way to change it."""

    def __init__(
        self, *, on_state: StateCallback | None = None, trace: TraceSink = null_sink
    ) -> None:
        self._state = DbcState.DISABLED
        self._on_state = on_state
        self._trace = trace
        #: every transition so far, oldest first (bounded): for tests and the CLI
        self.history: list[tuple[DbcState, DbcState, str]] = []

    @property
    def state(self) -> DbcState:
        return self._state

    def to(self, new: DbcState, reason: str = "") -> None:
        """Move to ``new`` (no-op when already there). Illegal transitions are driver bugs."""
        old = self._state
        if new is old:
            return
        if new not in ALLOWED[old]:
            raise DbcStateError(f"illegal DbC state transition {old.name} -> {new.name}")
        self._state = new
        if len(self.history) < 10_000:
            self.history.append((old, new, reason))
        log.info("DbC state %s -> %s%s", old.name, new.name, f" ({reason})" if reason else "")
        self._trace("state", old=old.name, new=new.name, reason=reason)
        if self._on_state is not None:
            self._on_state(old, new)
