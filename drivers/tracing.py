"""The trace seam: a callable that receives what happened, for pcapng/JSON writers in harness.

``sink(kind, **fields)``. Kinds and their fields (all optional beyond these):

* ``"urb"``: one USB-level transfer as the debug host saw it. ``stage`` "S" (submit) or "C"
  (complete); ``direction`` "in" (target -> host, USB IN) or "out" (host -> target, USB OUT);
  ``endpoint`` (USB endpoint number, 0x80 bit for IN); ``data`` (bytes); ``status`` (0, or a
  negative errno: -32 stall, -71 protocol error, -108 shutdown); ``length``; ``comment`` (the
  TRB or event behind it, one-line rendering); ``urb_id`` (pairs S with C); ``setup`` (8 bytes,
  control transfers only).
* ``"trb"``: a TRB queued by the driver: ``ring``, ``address``, ``text``.
* ``"event"``: an event TRB consumed: ``address``, ``text``.
* ``"mmio"``: ``op`` "r"/"w", ``offset``, ``value``, ``width``.
* ``"state"``: ``old``, ``new`` (driver state names).
"""

from __future__ import annotations

from typing import Any, Protocol


class TraceSink(Protocol):
    def __call__(self, kind: str, /, **fields: Any) -> None: ...


def null_sink(kind: str, /, **fields: Any) -> None:
    """A sink that drops everything (the default)."""
