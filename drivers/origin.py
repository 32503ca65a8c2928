"""The code-origin seam: "which line of driver code is touching the device right now".

A device model that reports a rule broken by the driver (the virtual xHCI's findings) asks
:func:`current_origin` and attaches the answer. Whoever runs driver code sets a provider for the
current thread with :func:`origin_provider`; the native runner
(:mod:`dbc_harness.drivers.native`) installs one that names the emulated PC as ``file.c:line``
(or ``function+0xoff`` without DWARF). The provider is a callable so the location is only
computed when a finding actually asks for it: the MMIO hot path pays nothing.

The model never imports the runner and the runner never imports the model: both only know this
module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


def current_origin() -> str | None:
    """The current thread's code origin (e.g. ``"dbc.c:212 (dbc_init+0x4c)"``), or None."""
    provider: Callable[[], str | None] | None = getattr(_local, "provider", None)
    if provider is None:
        return None
    try:
        return provider()
    except Exception:  # an origin is a hint: never let it break the finding being recorded
        return None


@contextmanager
def origin_provider(provider: Callable[[], str | None]) -> Iterator[None]:
    """Make ``provider`` answer :func:`current_origin` in this thread for the ``with`` body
    (nests: the previous provider comes back afterwards)."""
    previous = getattr(_local, "provider", None)
    _local.provider = provider
    try:
        yield
    finally:
        _local.provider = previous
