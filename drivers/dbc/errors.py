"""The DbC driver's one exception family: every failure is a :class:`DbcError`.

Named subclasses let callers react to the expected outcomes (no DbC on this controller, a DbC
owned by someone else, the cable pulled with data in flight) without parsing messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field


class DbcError(Exception):
    """Base class of every error raised by :mod:`dbc_harness.drivers.dbc`."""


class DbcConfigError(DbcError, ValueError):
    """A driver option or identity value that can never work (e.g. a string too long for a USB
    string descriptor, a ring size outside 16..4096 TRBs)."""


class DbcTimeout(DbcError, TimeoutError):
    """A wait ran past its deadline. ``waiting_for`` names what was awaited."""

    def __init__(self, waiting_for: str, timeout: float) -> None:
        self.waiting_for = waiting_for
        self.timeout = timeout
        super().__init__(f"timed out after {timeout:g} s waiting for {waiting_for}")


class DbcNotFound(DbcError):
    """The controller has no Debug Capability (extended capability ID 0x0A) in its extended
    capability list: a clear, expected result on many controllers (and on QEMU's xHCIs)."""


class DbcBusy(DbcError):
    """DCCTRL.DCE was already set (firmware or another driver owns the DbC) and the driver was not
    asked to take over (``takeover=False``)."""


class DbcStateError(DbcError):
    """An operation that the current :class:`~drivers.dbc.state.DbcState` does not allow (e.g.
    ``write()`` before ``start()`` or after ``stop()``)."""


@dataclass(frozen=True)
class UndeliveredMessage:
    """One message accepted by ``write()`` that did not (fully) reach the debug host.

    ``message_id`` is the id ``write()`` returned. How much of ``data`` reached the host:

    * ``delivered``: bytes the controller confirmed (Transfer Events, with the TRB Transfer
      Length residue of a TRB it stopped in): ``data[:delivered]`` certainly arrived;
    * ``delivered_max``: the most that may have arrived. It equals ``delivered`` (``exact``)
      whenever the controller told us; it is larger when the host went away (unplug, port
      reset, controller reset, surprise removal) while the controller was sending a TRB it
      never completed: USB acknowledges packets, and no register or event tells software
      how many packets of that TRB the host took. ``data[delivered_max:]`` certainly did not
      arrive. Retransmitting ``data[delivered:]`` duplicates nothing only when ``exact``.

    ``writer`` is the ``threading.get_ident()`` of the thread whose ``write()`` accepted it
    (reports are raised in that thread only).
    """

    message_id: int
    data: bytes
    delivered: int
    reason: str
    delivered_max: int = -1
    writer: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.delivered_max < self.delivered:
            object.__setattr__(self, "delivered_max", self.delivered)

    @property
    def exact(self) -> bool:
        """True when exactly ``delivered`` bytes arrived (the controller said so)."""
        return self.delivered_max == self.delivered

    @property
    def undelivered_bytes(self) -> bytes:
        """``data[delivered:]``: what is not confirmed (see ``exact``)."""
        return self.data[self.delivered :]


class DbcUndelivered(DbcError):
    """Data accepted by ``write()`` that was not delivered. ``undelivered`` lists the messages in
    write order; nothing else was dropped."""

    def __init__(self, message: str, undelivered: tuple[UndeliveredMessage, ...]) -> None:
        self.undelivered = undelivered
        ids = ", ".join(str(m.message_id) for m in undelivered)
        super().__init__(f"{message}; undelivered message ids: [{ids}]")

    @property
    def message_ids(self) -> tuple[int, ...]:
        return tuple(m.message_id for m in self.undelivered)


#: Short alias named in the public API.
Undelivered = DbcUndelivered


class DbcDisconnected(DbcUndelivered):
    """The debug host went away (unplug, host port reset, DCR dropped, controller reset) while
    messages were in flight. The driver recovers by itself; the listed messages were not
    (fully) delivered."""


class DbcTransferError(DbcUndelivered):
    """The controller completed a transfer with an error the driver could not recover by
    retrying (e.g. TRB Error); the listed messages were not (fully) delivered."""


class DbcSurpriseRemoval(DbcError):
    """Register reads return all ones (0xFFFFFFFF): the controller is gone (hot-unplugged,
    powered off or its BAR disabled). The driver stops touching its registers; what the
    controller had already written into our memory (completed transfers) is still consumed:
    ``read()`` returns the received data first and raises this only once none is left.

    ``undelivered``: the messages of the calling thread's ``write()`` calls that did not
    (fully) reach the host (see :class:`UndeliveredMessage`), reported once.
    """

    def __init__(self, message: str, undelivered: tuple[UndeliveredMessage, ...] = ()) -> None:
        self.undelivered = undelivered
        super().__init__(message)


class DbcConcurrentUse(DbcStateError):
    """A second thread called ``read()``/``read_message()`` while another thread was reading:
    the driver has one reader at a time (see the threading contract in :class:`DbcDriver`)."""


class DbcDeviceError(DbcError):
    """The controller supplied a value that cannot be right: an event TRB pointer outside our
    rings or not in flight, a residual larger than the TRB's length, an unknown endpoint ID.
    The event is discarded and counted; nothing crashes."""


class DbcDmaError(DbcError):
    """The DMA space could not provide the memory the DbC needs (wraps the allocator error)."""


def warn_undelivered_at_stop(log: logging.Logger, lost: Sequence[UndeliveredMessage]) -> None:
    """Log what a stop() on leaving a ``with`` block reported undelivered (nothing if nothing):
    the messages stay available from ``take_undelivered()``, never dropped silently."""
    if lost:
        log.warning(
            "DbC stopped with %d message(s) not delivered (ids %s); see take_undelivered()",
            len(lost), [m.message_id for m in lost],
        )  # fmt: skip
