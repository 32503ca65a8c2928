"""The Python DbC driver: a user-space driver for the xHCI USB Debug Capability.

Public API (others code against these names)::

    from dbc_harness.drivers.dbc import DbcDriver, DbcState, DbcIdentity, DbcCounters, DbcError

* :class:`DbcDriver` (``driver.py``): ``DbcDriver(mmio, dma, *, identity=DbcIdentity(),
  clock=REAL_CLOCK, trace=null_sink, dbc_offset=None, port_reset=None (the driver decides),
  pci_vendor_id=None, mmio64=False (64-bit registers as two dwords),
  ring_trbs=256, event_ring_trbs=None, in_buffers=None (= min(64, ring_trbs // 2)),
  in_buffer_size=1024,
  max_bytes_in_flight=4 MiB, rx_limit=16 MiB, takeover=False, on_state=None,
  raise_device_errors=False, zlp=False)``; ``find_dbc()``, ``start(timeout)``, ``state``,
  ``write(data, timeout) -> message id``, ``flush(timeout)``, ``read(max_bytes, timeout) -> bytes``,
  ``read_message(timeout)``, ``iter_read(max_bytes, idle_timeout)``, ``poll()``,
  ``stop(timeout) -> undelivered``, ``take_undelivered()``, ``counters``, ``device_errors``,
  context manager (``__exit__`` stops).
* :class:`DbcState` (``state.py``): DISABLED, INITIALIZED, ENABLED, CONNECTED, CONFIGURED,
  REMOVED; ``on_state(old, new)`` callback, a log line and a trace record per transition.
* :class:`DbcIdentity` (``identity.py``): VID/PID/bcdDevice/protocol and the strings; default
  1d6b:0010 (Linux ``usb_debug`` binds it).
* :class:`DbcCounters` (``counters.py``): bytes/TRBs/messages each way, events, ERDP writes,
  doorbells, errors by completion code, recoveries by kind, spurious stalls, device errors.
* Errors (``errors.py``), all :class:`DbcError`: DbcTimeout, DbcNotFound, DbcBusy,
  DbcStateError (DbcConcurrentUse: a second reader thread), DbcConfigError, DbcUndelivered
  (= Undelivered) with DbcDisconnected and DbcTransferError (``.undelivered``:
  :class:`UndeliveredMessage` list), DbcSurpriseRemoval, DbcDeviceError, DbcDmaError.

Directions: "to host" / OUT ring = target -> host (``write()``); "from host" / IN ring = host ->
target (``read()``). See datapath.py.
"""

from dbc_harness.drivers.dbc.counters import DbcCounters
from dbc_harness.drivers.dbc.driver import DbcDriver
from dbc_harness.drivers.dbc.errors import (
    DbcBusy,
    DbcConcurrentUse,
    DbcConfigError,
    DbcDeviceError,
    DbcDisconnected,
    DbcDmaError,
    DbcError,
    DbcNotFound,
    DbcStateError,
    DbcSurpriseRemoval,
    DbcTimeout,
    DbcTransferError,
    DbcUndelivered,
    Undelivered,
    UndeliveredMessage,
)
from dbc_harness.drivers.dbc.identity import DbcIdentity
from dbc_harness.drivers.dbc.state import DbcState

__all__ = [
    "DbcBusy",
    "DbcConcurrentUse",
    "DbcConfigError",
    "DbcCounters",
    "DbcDeviceError",
    "DbcDisconnected",
    "DbcDmaError",
    "DbcDriver",
    "DbcError",
    "DbcIdentity",
    "DbcNotFound",
    "DbcState",
    "DbcStateError",
    "DbcSurpriseRemoval",
    "DbcTimeout",
    "DbcTransferError",
    "DbcUndelivered",
    "Undelivered",
    "UndeliveredMessage",
]
