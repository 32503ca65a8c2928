"""The one exception family of :mod:`drivers.xhci`: every failure is an :class:`XhciLayoutError`
subclass, so callers can catch the whole part with one ``except``."""

from __future__ import annotations


class XhciLayoutError(Exception):
    """Base class of every error raised by :mod:`dbc_harness.drivers.xhci`."""


class LayoutError(XhciLayoutError, ValueError):
    """A layout declaration the derivation engine cannot handle, a field value out of range for
    its bit width (or not aligned for an address field), an unknown field name, or a buffer too
    short for the layout."""


class DescriptorError(XhciLayoutError, ValueError):
    """A malformed USB string descriptor (bad bLength, wrong bDescriptorType, odd UTF-16 length,
    text too long for 255 bytes, or a length that disagrees with the buffer)."""


class RingError(XhciLayoutError):
    """Misuse of a ring: an address outside the ring, a completion for a TRB that is not in
    flight, a segment size out of range, a buffer that breaks spec table 6-1 placement rules."""


class RingFull(RingError):
    """The producer ring has no free TRB slot (the consumer has not completed enough TRBs)."""
