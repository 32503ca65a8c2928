"""The DbC's rings: its OUT and IN transfer rings are :class:`~dbc_harness.drivers.xhci.ring.
ProducerRing` s and its event ring an :class:`~dbc_harness.drivers.xhci.ring.EventRing` (one
segment each, xHCI 1.2 section 7.6.3). This module only adds the driver's rules on top: sizes
16..4096 TRBs (a :class:`DbcConfigError` otherwise) and allocation below the controller's
address limit (a :class:`DbcDmaError` when the DMA space cannot give it).
"""

from __future__ import annotations

from dbc_harness.allocator import DmaError, DmaSpace
from dbc_harness.drivers.dbc.errors import DbcConfigError, DbcDmaError
from dbc_harness.drivers.xhci.ring import (
    MAX_SEGMENT_TRBS,
    MIN_EVENT_RING_TRBS,
    EventRing,
    ProducerRing,
)

__all__ = ["allocate_event_ring", "allocate_transfer_ring", "check_ring_size"]

#: the driver sizes its transfer rings like its event ring (spec table 6-1's event ring range)
MIN_RING_TRBS = MIN_EVENT_RING_TRBS
MAX_RING_TRBS = MAX_SEGMENT_TRBS


def check_ring_size(trbs: int, what: str) -> None:
    if not isinstance(trbs, int) or not MIN_RING_TRBS <= trbs <= MAX_RING_TRBS:
        raise DbcConfigError(
            f"{what} must be {MIN_RING_TRBS}..{MAX_RING_TRBS} TRBs (one segment), got {trbs!r}"
        )


def allocate_transfer_ring(
    dma: DmaSpace, trbs: int, *, limit: int | None, name: str
) -> ProducerRing:
    """The DbC's OUT (``name="OUT"``, target -> host) or IN (``"IN"``, host -> target) ring."""
    check_ring_size(trbs, f"{name} ring size")
    try:
        return ProducerRing.allocate(dma, trbs, name=name, limit=limit)
    except DmaError as exc:
        raise DbcDmaError(f"cannot allocate the {name} ring ({trbs} TRBs): {exc}") from exc


def allocate_event_ring(dma: DmaSpace, trbs: int, *, limit: int | None) -> EventRing:
    """The DbC's event ring and its one-entry ERST."""
    check_ring_size(trbs, "event ring size")
    try:
        return EventRing.allocate(dma, trbs, limit=limit)
    except DmaError as exc:
        raise DbcDmaError(f"cannot allocate the event ring ({trbs} TRBs): {exc}") from exc
