"""The DbC drivers the shared scenarios run against, and the debug-host helpers they use.

A scenario (echo, faults, recovery) is written once, against :class:`DriverFactory`, and runs
against each driver kind (the ``make_driver`` fixture of ``tests/conftest.py``):

* ``python``: :class:`dbc_harness.drivers.dbc.DbcDriver`, the executable specification;
* ``native``: :class:`dbc_harness.drivers.native.driver.NativeDbcDriver` running the reference C
  driver (``drivers/native/reference/dbc.c``) under CPU emulation. Its sizes and identity are
  compile-time switches, so the options with a C equivalent become ``-D`` switches of
  :func:`~dbc_harness.drivers.native.build.build_reference` (compiled once per configuration
  and cached by build.py); an option without one is a :class:`NoNativeEquivalent` error, never
  silently dropped.

Where the two drivers legitimately differ the factory names the difference (its documented
properties: ``keeps_records``, ``counts_in_detail``...) and a test branches on that name, never
on a weakened assertion for both. Known defects of the native kind are strict xfails
(:class:`KnownBug`, :func:`kind_param`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest
from dbc_harness.drivers.clock import Clock
from dbc_harness.drivers.dbc import (
    DbcCounters,
    DbcDriver,
    DbcIdentity,
    DbcState,
    UndeliveredMessage,
)
from dbc_harness.drivers.dbc_api import DbcDriverApi
from dbc_harness.fixtures.virtual import DebugHostTimeout, VirtualXhci

if TYPE_CHECKING:
    from dbc_harness.drivers.native.driver import NativeDbcDriver

Kind = Literal["python", "native"]
#: every driver kind, in the order the ids name them
KINDS: tuple[Kind, ...] = ("python", "native")


class Driver(DbcDriverApi, Protocol):
    """The driver seam (:class:`DbcDriverApi`) plus what the scenarios also use of a driver:
    poll, its clock, counters and undelivered reports (both kinds have them)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def counters(self) -> DbcCounters: ...
    def poll(self) -> int: ...
    def stop(self, timeout: float = ...) -> tuple[UndeliveredMessage, ...]: ...
    def take_undelivered(self) -> tuple[UndeliveredMessage, ...]: ...


class NoNativeEquivalent(ValueError):
    """A Python-driver option the reference C driver has no equivalent for."""


#: Python-driver options that are C compile-time switches of dbc.c (same meaning)
_SIZE_SWITCHES = {"ring_trbs": "DBC_RING_TRBS", "event_ring_trbs": "DBC_EVENT_TRBS"}
#: options both constructors take as they are
_SHARED_OPTIONS = ("clock", "trace", "mmio64", "takeover", "on_state")
#: the C driver's log line naming the DbC's place (dbc.c, find_dbc)
_FOUND_AT = re.compile(r"Debug Capability at BAR0\+0x([0-9A-Fa-f]+)")


def _c_string(text: str) -> str:
    if not text.isascii() or '"' in text or "\\" in text:
        raise NoNativeEquivalent(f"identity string {text!r}: dbc.c's -D strings are plain ASCII")
    return f'"{text}"'


def _identity_switches(ident: DbcIdentity) -> dict[str, int | str]:
    """dbc.c's identity defines (DbC Info Context strings, DCDDI1/DCDDI2) for ``ident``."""
    if ident.langid != DbcIdentity().langid:
        raise NoNativeEquivalent("dbc.c's String0 has LANGID 0x0409 only")
    return {
        "DBC_VENDOR_ID": ident.vendor_id,
        "DBC_PRODUCT_ID": ident.product_id,
        "DBC_DEVICE_REV": ident.bcd_device,
        "DBC_PROTOCOL": ident.protocol,
        "DBC_MANUFACTURER": _c_string(ident.manufacturer),
        "DBC_PRODUCT": _c_string(ident.product),
        "DBC_SERIAL": _c_string(ident.serial),
    }


def _native_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int | str]]:
    """Python-driver options -> (NativeDbcDriver options, dbc.c ``-D`` switches)."""
    native: dict[str, Any] = {}
    config: dict[str, int | str] = {}
    for name, value in options.items():
        if name in _SHARED_OPTIONS:
            native[name] = value
        elif name in _SIZE_SWITCHES:
            config[_SIZE_SWITCHES[name]] = value
        elif name == "identity":
            config.update(_identity_switches(value))
        elif name == "port_reset":
            # dbc_init(): DBC_F_PORT_RESET resets at once; without it the C driver learns the
            # reset (once, when CCS is still 0 200 ms after DCE): the Python driver's None. It
            # has no "never reset" (the Python driver's False).
            if value is False:
                raise NoNativeEquivalent("port_reset=False: dbc.c always learns the reset")
            native["port_reset"] = bool(value)
        else:
            raise NoNativeEquivalent(f"{name}={value!r}: no reference C driver equivalent")
    return native, config


@cache
def reference_object(config: tuple[tuple[str, int | str], ...] = ()) -> Path:
    """The reference C driver compiled with ``config`` (``-D`` switches): once per test session
    and configuration here, and across sessions by build.py's cache."""
    # deferred: the native package pulls in unicorn and capstone (CPU emulation), which only
    # the native kind needs
    from dbc_harness.drivers.native.build import build_reference

    return build_reference(config=dict(config))


@dataclass
class DriverFactory:
    """Makes drivers of one kind on a virtual controller; remembers them so the test's teardown
    releases what they hold (a native driver's emulated machine)."""

    kind: Kind
    made: list[Any] = field(default_factory=list)

    def __str__(self) -> str:
        return self.kind

    # -- the documented differences ---------------------------------------------------------
    @property
    def keeps_records(self) -> bool:
        """The Python driver keeps a record of each thing that went wrong: each bad value the
        controller supplied (``device_errors``: DbcDeviceError) and each message a surprise
        removal cut (the exception's ``undelivered``, reason "surprise removal"). The C ABI has
        counters (``struct dbc_stats``: ``device_errors``, ``lost_bytes``; ``dbc_out_pending``)
        from which NativeDbcDriver rebuilds message reports for a reset it counted
        (DbcDisconnected) and at stop() (reason "disconnect: driver stopped", or "surprise
        removal" after one: the removal's exception carries none)."""
        return self.kind == "python"

    @property
    def counts_in_detail(self) -> bool:
        """Only the Python driver counts spurious stalls, transfer errors by completion code
        and firmware takeovers (``struct dbc_stats`` has no such counters: NativeDbcDriver
        reports them as 0)."""
        return self.kind == "python"

    @property
    def reports_each_state(self) -> bool:
        """The Python driver reports every state it passes through; NativeDbcDriver reads
        ``dbc_state()`` after each call into the C code, so a bring-up that ran inside one
        ``dbc_init()`` is seen as one change to the state it ended in."""
        return self.kind == "python"

    @property
    def reads_messages(self) -> bool:
        """The Python driver can hand over one host transfer whole (``read_message``,
        ``pending_read_bytes``), a zero-length one too; the C ABI's ``dbc_read()`` is a byte
        stream (a zero-length transfer carries nothing to read)."""
        return self.kind == "python"

    @property
    def ends_transfers_at_packets(self) -> bool:
        """The Python driver posts 1024-byte receive buffers: every packet completes one, so
        the host's transfer needs no ending. The C driver posts 64 KiB buffers (DBC_IN_BUF_SIZE,
        as fast drivers do): a transfer whose length is a multiple of 1024 is ended by the
        host's zero-length packet (libusb: LIBUSB_TRANSFER_ADD_ZERO_PACKET), else the driver
        sees it (and its Transfer Event comes) only when more data fills the buffer."""
        return self.kind == "python"

    @property
    def white_box(self) -> bool:
        """The Python driver's objects can be inspected (its rings' addresses...); the C
        driver's state is behind the ABI, where only the strict model sees it."""
        return self.kind == "python"

    def supports(self, **options: Any) -> bool:
        """Whether this kind has ``options`` (see :class:`NoNativeEquivalent`)."""
        if self.kind == "python":
            return True
        try:
            _native_options(options)
        except NoNativeEquivalent:
            return False
        return True

    def dbc_offset_found(self, drv: Any) -> int:
        """Where the driver's capability walk found the DbC: the Python driver answers
        ``find_dbc()``; the C driver logs it (``dbc: Debug Capability at BAR0+0x...``)."""
        if self.kind == "python":
            return int(drv.find_dbc())
        found = [m for line in drv.log if (m := _FOUND_AT.search(line))]
        assert len(found) == 1, drv.log
        return int(found[0].group(1), 16)

    # -- making drivers ------------------------------------------------------------------------
    def __call__(self, x: VirtualXhci, **options: Any) -> Driver:
        """A driver of this kind on ``x`` (its clock unless given), not started."""
        options.setdefault("clock", x.clock)
        if self.kind == "python":
            drv: Driver = DbcDriver(x.mmio, x.dma, **options)
        else:
            drv = self._native(x, options)
        self.made.append(drv)
        return drv

    def started(self, x: VirtualXhci, timeout: float = 5.0, **options: Any) -> Driver:
        drv = self(x, **options)
        drv.start(timeout=timeout)
        return drv

    def _native(self, x: VirtualXhci, options: dict[str, Any]) -> NativeDbcDriver:
        # deferred: unicorn + capstone, only for the native kind
        from dbc_harness.drivers.native.driver import NativeDbcDriver

        native, config = _native_options(options)
        obj = reference_object(tuple(sorted(config.items())))
        return NativeDbcDriver(x.mmio, x.dma, obj=obj, **native)

    def release(self) -> None:
        """Let go of what the drivers hold outside the bench (the native CPU emulation); the
        tests themselves stop their drivers."""
        for drv in self.made:
            machine = getattr(drv, "machine", None)
            if machine is not None:
                machine.close()
        self.made.clear()


@dataclass(frozen=True)
class KnownBug:
    """A known defect of the native kind: the reason of a strict xfail, and the error the test
    fails with because of it (any other failure still fails the test)."""

    reason: str
    raises: type[BaseException] = AssertionError


def kind_param(kind: Kind, *values: object, native_bug: KnownBug | None = None) -> Any:
    """A parameter set for ``@pytest.mark.parametrize(("make_driver", ...), ...,
    indirect=["make_driver"])``: the driver kind and the test's other values. With
    ``native_bug`` the native run is expected to fail with that bug's error, strictly: it
    fails the run once the defect is fixed, so the mark goes with the fix."""
    marks = []
    if native_bug is not None and kind == "native":
        marks.append(
            pytest.mark.xfail(strict=True, reason=native_bug.reason, raises=native_bug.raises)
        )
    ids = "-".join([kind, *(str(v) for v in values)])
    return pytest.param(kind, *values, marks=marks, id=ids)


def kinds(native_bug: KnownBug | None = None) -> list[Any]:
    """``make_driver``'s parameters (indirect), the native one marked with ``native_bug``."""
    return [kind_param(k, native_bug=native_bug) for k in KINDS]


# -- the debug host's side -------------------------------------------------------------------


@contextmanager
def strict_controller(**options: Any) -> Iterator[VirtualXhci]:
    """A strict virtual controller (``options`` for VirtualXhci), closed afterwards; a test
    that ends normally fails on any spec finding it recorded (strict mode raises at a driver's
    access; this catches what the model recorded where nothing could raise)."""
    ctl = VirtualXhci(strict=True, **options)
    try:
        yield ctl
        findings = list(ctl.findings)
    finally:
        ctl.close()
    assert findings == []


def host_read(x: VirtualXhci, drv: Driver, n: int, timeout: float = 5.0) -> bytes:
    """The debug host reads (USB IN) until ``n`` bytes arrived, letting the driver run; with
    ``n == 0``, until one (zero-length) transfer arrived."""
    parts: list[bytes] = []
    got = 0
    end = x.clock.monotonic() + timeout
    while got < n or (n == 0 and not parts):
        drv.poll()
        try:
            chunk = x.host.recv(max(1, n - got), timeout=0.001)
        except DebugHostTimeout:
            if x.clock.monotonic() > end:
                raise
            continue
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def settle(
    drv: Driver,
    state: DbcState = DbcState.CONFIGURED,
    timeout: float = 5.0,
    x: VirtualXhci | None = None,
) -> None:
    """Let the driver run until it reaches ``state`` (and, with ``x``, the host configured
    the device again)."""
    end = drv.clock.monotonic() + timeout
    while drv.state is not state or (x is not None and not x.host.configured):
        if drv.clock.monotonic() > end:
            raise AssertionError(f"driver stuck in {drv.state.name}, wanted {state.name}")
        drv.poll()
        drv.clock.sleep(0.001)


def roundtrip(x: VirtualXhci, drv: Driver, tag: bytes) -> None:
    """``tag`` to the host and back reversed, through the driver's write() and read()."""
    drv.write(tag)
    assert host_read(x, drv, len(tag)) == tag
    xfer = x.host.submit(tag[::-1])
    got = b""
    while len(got) < len(tag):
        got += drv.read(len(tag) - len(got), timeout=2.0)
    assert got == tag[::-1]
    x.host.wait(xfer, timeout=1.0)


HostAction = Literal["unplug", "hot", "warm", "deconfigure", "link_error"]
HOST_ACTIONS: tuple[HostAction, ...] = ("unplug", "hot", "warm", "deconfigure", "link_error")


def lose_host_and_return(x: VirtualXhci, drv: Driver, action: HostAction) -> None:
    """The debug host goes away (``action``) and comes back; returns once the driver is
    Configured again and the host configured the device."""
    if action == "unplug":
        x.host.unplug()
        settle(drv, DbcState.ENABLED)
        x.host.plug()
    elif action == "hot" or action == "warm":
        x.host.reset(action)
    elif action == "deconfigure":
        x.host.set_configuration(0)
        settle(drv, DbcState.CONNECTED)
        x.host.set_configuration(1)
    else:
        x.host.link_error()
        settle(drv, DbcState.CONNECTED)
        x.host.reset("warm")
    settle(drv, x=x)


def reconnect_cycles(x: VirtualXhci, drv: Driver, cycles: int) -> None:
    """``cycles`` times: five small messages, the host reads them, unplug, replug. A driver
    that does not re-initialise its rings on reconnect fills them."""
    for i in range(cycles):
        for _ in range(5):
            drv.write(b"m%d" % i)
        host_read(x, drv, 10)
        x.host.unplug()
        settle(drv, DbcState.ENABLED)
        x.host.plug()
        settle(drv)
