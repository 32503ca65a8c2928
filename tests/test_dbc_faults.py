"""Every quirk and fault of the virtual bench, with the recovery a driver must make: each
scenario runs against both driver kinds (``make_driver``: the Python DbcDriver and the reference C
driver under CPU emulation, tests/driver_kinds.py), differences named by the factory.

Strict mode throughout: a spec finding raised by the model fails the test. Deterministic mode:
the driver's waits advance virtual time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dbc_harness.drivers.dbc import (
    DbcBusy,
    DbcDisconnected,
    DbcState,
    DbcSurpriseRemoval,
    DbcTimeout,
)
from dbc_harness.drivers.dbc.bringup import PORT_RESET_AFTER
from dbc_harness.drivers.xhci.registers import CAPLENGTH, OPERATIONAL_REGS, USBCMD, read_register
from dbc_harness.fixtures.ledger import Ledger
from dbc_harness.fixtures.virtual import (
    DebugHostTimeout,
    HostStall,
    HostTransferError,
    Quirks,
    SpecViolation,
    TransferFault,
    VirtualXhci,
)
from dbc_harness.fixtures.virtual.faults import FAULT_KINDS
from dbc_harness.fixtures.virtual.quirks import EventPointerMode, FaultCompletion
from dbc_harness.harness.benchmarks.faults import events_waiting

from tests.driver_kinds import (
    HOST_ACTIONS,
    KINDS,
    DriverFactory,
    HostAction,
    host_read,
    kind_param,
    lose_host_and_return,
    reconnect_cycles,
    roundtrip,
    settle,
)

pytestmark = pytest.mark.timeout(120)


def make(quirks: Quirks | None = None, **kw: Any) -> VirtualXhci:
    return VirtualXhci(strict=True, quirks=quirks or Quirks(), **kw)


@pytest.fixture
def closer() -> Iterator[list[VirtualXhci]]:
    made: list[VirtualXhci] = []
    yield made
    for x in made:
        findings = list(x.findings)
        x.close()
        assert findings == []


def bench(closer: list[VirtualXhci], quirks: Quirks | None = None, **kw: object) -> VirtualXhci:
    x = make(quirks, **kw)
    closer.append(x)
    return x


# -- bring-up ----------------------------------------------------------------------------------


def test_controller_gone_before_start_is_surprise_removal(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer)
    x.surprise_remove()
    drv = make_driver(x)
    with pytest.raises(DbcSurpriseRemoval):
        drv.start(timeout=0.5)
    assert drv.state is DbcState.DISABLED
    assert x.dma.stats()["live_bytes"] == 0


def test_without_a_host_start_times_out_and_frees_everything(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer, plugged=False)
    drv = make_driver(x)
    with pytest.raises(DbcTimeout, match="DCR"):
        drv.start(timeout=0.2)
    assert drv.state is DbcState.DISABLED
    assert x.dma.stats()["live_bytes"] == 0


# -- identity of the part --------------------------------------------------------------------


@pytest.mark.parametrize("ids", [(0, 1), (2, 3)])
def test_both_endpoint_id_schemes(
    closer: list[VirtualXhci], make_driver: DriverFactory, ids: tuple[int, int]
) -> None:
    """AMD parts number the DbC endpoints 0/1 in Transfer Events, Intel 2/3."""
    x = bench(closer, Quirks(endpoint_ids=ids))
    drv = make_driver.started(x)
    roundtrip(x, drv, b"endpoint ids")
    assert drv.counters.device_errors == 0
    if make_driver.keeps_records:
        assert drv.device_errors == []  # type: ignore[attr-defined]  # the Python driver's
    drv.stop()


def test_enumeration_needs_root_port_reset(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """Nothing connects until the USB3 root ports are reset. A driver told never to reset them
    (the Python driver's port_reset=False) waits in vain; the default learns the reset only
    after PORT_RESET_AFTER, so a shorter deadline runs out first; asked (port_reset=True) the
    reset comes right after DCE and is not a recovery."""
    x = bench(closer, Quirks(enumerate_after_root_port_reset=True))
    if make_driver.supports(port_reset=False):
        drv = make_driver(x, port_reset=False)
        with pytest.raises(DbcTimeout, match="DCR"):
            drv.start(timeout=0.5)
        assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0
    drv = make_driver(x)
    with pytest.raises(DbcTimeout, match="DCR"):
        drv.start(timeout=PORT_RESET_AFTER * 0.75)
    assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0
    drv = make_driver.started(x, port_reset=True)
    roundtrip(x, drv, b"after port reset")
    assert drv.counters.recoveries["root_port_reset"] == 0  # asked for: not a recovery
    drv.stop()


def test_root_port_reset_learned_when_nothing_connects(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """Default options, no PCI Vendor ID: DCPORTSC.CCS stays 0 for PORT_RESET_AFTER after DCE,
    so the driver resets the not-connected USB3 root ports once, logs and counts it."""
    x = bench(closer, Quirks(enumerate_after_root_port_reset=True))
    drv = make_driver.started(x)
    assert drv.counters.recoveries["root_port_reset"] == 1
    roundtrip(x, drv, b"learned")
    # an unplug and replug needs no second reset (the ports were reset while DCE = 1)
    lose_host_and_return(x, drv, "unplug")
    roundtrip(x, drv, b"replugged")
    assert drv.counters.recoveries["root_port_reset"] == 1
    drv.stop()


def test_dcst_er_lag_does_not_matter(closer: list[VirtualXhci], make_driver: DriverFactory) -> None:
    x = bench(closer, Quirks(dcst_er_lag_us=5000))
    drv = make_driver.started(x)
    roundtrip(x, drv, b"lagging ER")
    drv.stop()


def test_no_64bit_mmio_needs_dword_writes(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """Default: 64-bit registers as two dwords, low first (every part takes it); qword writes
    only when asked (mmio64=True), which a part without 64-bit MMIO refuses."""
    x = bench(closer, Quirks(no_64bit_mmio=True))
    drv = make_driver.started(x)
    roundtrip(x, drv, b"32-bit only")
    drv.stop()
    y = bench(closer)
    drv = make_driver.started(y, mmio64=True)
    roundtrip(y, drv, b"qwords")
    drv.stop()
    z = make(Quirks(no_64bit_mmio=True))
    try:
        with pytest.raises(SpecViolation):
            make_driver(z, mmio64=True).start(timeout=1.0)
    finally:
        z.close()


def test_firmware_left_enabled_busy_then_takeover(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer, Quirks(firmware_left_enabled=True))
    with pytest.raises(DbcBusy, match="takeover"):
        make_driver(x).start(timeout=1.0)
    drv = make_driver.started(x, takeover=True)
    if make_driver.counts_in_detail:
        assert drv.counters.recoveries["takeover"] == 1
    roundtrip(x, drv, b"taken over")
    drv.stop()


# -- event quirks ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zero", "nonmonotonic"])
def test_bad_event_pointers_are_named_errors_and_lose_nothing(
    closer: list[VirtualXhci], make_driver: DriverFactory, mode: EventPointerMode
) -> None:
    x = bench(closer, Quirks(transfer_event_pointer=mode))
    drv = make_driver.started(x)
    msgs = [bytes([i]) * (100 + i) for i in range(20)]
    for m in msgs:
        drv.write(m)
    drv.flush(timeout=2.0)
    assert host_read(x, drv, sum(map(len, msgs))) == b"".join(msgs)
    roundtrip(x, drv, b"still fine")
    assert drv.counters.device_errors >= 1, "bad TRB pointers must be reported"
    if make_driver.keeps_records:  # one DbcDeviceError each
        errors = drv.device_errors  # type: ignore[attr-defined]  # the Python driver's
        assert drv.counters.device_errors == len(errors)
    assert drv.counters.messages_to_host == len(msgs) + 1
    drv.stop()


# -- halts and stalls ------------------------------------------------------------------------


def test_host_halt_holds_writes_until_cleared(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer)
    drv = make_driver.started(x)
    x.host.halt("in")  # target -> host endpoint: DCCTRL.HOT
    drv.write(b"first")
    drv.write(b"second")
    with pytest.raises(DbcTimeout):
        drv.flush(timeout=0.05)
    with pytest.raises(HostStall):
        x.host.recv(100, timeout=0.01)
    x.host.clear_halt("in")
    drv.flush(timeout=1.0)
    assert host_read(x, drv, 11) == b"firstsecond"
    assert drv.counters.recoveries["halt_cleared"] >= 1
    drv.stop()


def test_host_halt_of_host_to_target_pipe(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer)
    drv = make_driver.started(x)
    x.host.halt("out")  # host -> target endpoint: DCCTRL.HIT
    with pytest.raises(HostStall):
        x.host.send(b"nope", timeout=0.01)
    drv.poll()
    x.host.clear_halt("out")
    drv.poll()
    roundtrip(x, drv, b"after HIT")
    drv.stop()


def test_spurious_stall_after_clear_halt_keeps_request(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer, Quirks(spurious_stall_on_clear_halt=True))
    drv = make_driver.started(x)
    roundtrip(x, drv, b"before")
    x.host.halt("out")
    drv.poll()
    x.host.clear_halt("out")  # nothing in flight host -> target: spurious STALL event
    drv.poll()
    x.host.halt("in")
    drv.poll()
    x.host.clear_halt("in")
    drv.poll()
    if make_driver.counts_in_detail:
        assert drv.counters.spurious_stalls >= 1
    roundtrip(x, drv, b"after spurious stall")
    drv.stop()


@pytest.mark.parametrize("completion", ["babble", "transaction_error"])
def test_target_to_host_transfer_fault_is_retried(
    closer: list[VirtualXhci], make_driver: DriverFactory, completion: FaultCompletion
) -> None:
    x = bench(closer, Quirks(transfer_faults=(TransferFault("out", 1, completion),)))
    drv = make_driver.started(x)
    drv.write(b"zero")
    drv.write(b"one")  # TD 1 fails on the wire, the endpoint halts (HOT)
    drv.write(b"two")
    assert host_read(x, drv, 4) == b"zero"
    with pytest.raises(HostStall):
        host_read(x, drv, 3, timeout=0.05)
    x.host.clear_halt("in")
    assert host_read(x, drv, 6) == b"onetwo"
    drv.flush(timeout=1.0)
    if make_driver.counts_in_detail:
        name = "BabbleDetectedError" if completion == "babble" else "USBTransactionError"
        assert drv.counters.errors[name] == 1
    drv.stop()


def test_halt_cleared_before_the_driver_polled_loses_and_repeats_nothing(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """A TD fails on the wire and halts the endpoint; the host clears the halt, the driver's
    next write rings the doorbell and the controller runs the TRB again, then halts on a later
    TD, all before the driver drained the first error's event: by then the endpoint context
    points at the later TRB. The first event must not be taken for "the controller moved past
    the TRB": every message arrives once and none is reported undelivered."""
    faults = tuple(TransferFault("out", td, "transaction_error") for td in (1, 3))
    x = bench(closer, Quirks(transfer_faults=faults))
    drv = make_driver.started(x)
    drv.write(b"zero")
    drv.write(b"one")  # TD 1 fails; its retry is TD 2
    assert x.host.recv(64, timeout=0.05) == b"zero"  # the driver does not poll from here on
    with pytest.raises(HostStall):
        x.host.recv(64, timeout=0.05)
    x.host.clear_halt("in")
    drv.write(b"two")  # TD 3 fails: the context now points at it
    drv.write(b"three")
    got = b""
    while len(got) < len(b"onetwothree"):
        try:
            got += x.host.recv(64, timeout=0.05)
        except HostStall:
            x.host.clear_halt("in")
        except DebugHostTimeout:
            drv.poll()
    assert got == b"onetwothree"
    drv.flush(timeout=1.0)  # DbcTransferError if a message was given up
    roundtrip(x, drv, b"after the retried TDs")
    drv.stop()


@pytest.mark.parametrize("completion", ["babble", "transaction_error"])
def test_host_to_target_transfer_fault(
    closer: list[VirtualXhci], make_driver: DriverFactory, completion: FaultCompletion
) -> None:
    x = bench(closer, Quirks(transfer_faults=(TransferFault("in", 0, completion),)))
    drv = make_driver.started(x)
    xfer = x.host.submit(b"lost")
    drv.poll()
    with pytest.raises(HostTransferError):
        x.host.wait(xfer, timeout=0.1)
    x.host.clear_halt("out")
    roundtrip(x, drv, b"next one arrives")
    if make_driver.reads_messages:  # whatever the failed transfer left is a whole message
        py: Any = drv
        assert py.read_message(timeout=0.01) if py.pending_read_bytes else True
    drv.stop()


# -- the host goes away ----------------------------------------------------------------------


def test_unplug_mid_transfer_reports_undelivered_and_recovers(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer, Quirks(unplug_after_out_bytes=100_000))
    drv = make_driver.started(x)
    first = bytes(range(256)) * 200  # 51200 bytes: delivered
    second = b"\xaa" * 100_000  # cut by the unplug
    id1 = drv.write(first)
    assert host_read(x, drv, len(first)) == first
    id2 = drv.write(second)
    with pytest.raises(DbcDisconnected) as info:
        drv.flush(timeout=2.0)
    assert id1 not in info.value.message_ids and id2 in info.value.message_ids
    settle(drv, DbcState.ENABLED)
    x.host.plug()
    settle(drv)
    roundtrip(x, drv, b"replugged")
    assert drv.counters.recoveries["disconnect"] == 1
    drv.stop()


@pytest.mark.parametrize("action", HOST_ACTIONS)
def test_host_side_loss_and_return(
    closer: list[VirtualXhci], make_driver: DriverFactory, action: HostAction
) -> None:
    x = bench(closer)
    drv = make_driver.started(x)
    roundtrip(x, drv, b"before")
    lose_host_and_return(x, drv, action)
    for i in range(3):  # rings were re-initialised: no leak across reconnects
        roundtrip(x, drv, b"after %d" % i)
    assert sum(drv.counters.recoveries.values()) >= 1
    drv.stop()


def test_replug_rings_the_doorbells_for_data_queued_while_away(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """Data written right after the host came back flows without another write: the driver
    rang both doorbells when DCR rose again (7.6.7.4)."""
    x = bench(closer)
    drv = make_driver.started(x)
    roundtrip(x, drv, b"before")
    lose_host_and_return(x, drv, "unplug")
    x.host.send(b"host first", timeout=1.0)  # lands in IN buffers posted at reconfiguration
    assert drv.read(64, timeout=1.0) == b"host first"
    drv.stop()


def test_repeated_reconnects_do_not_fill_rings(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer)
    drv = make_driver.started(x, ring_trbs=16)
    reconnect_cycles(x, drv, 12)
    roundtrip(x, drv, b"still room")
    drv.stop()


def test_controller_reset_kills_dbc_and_driver_rebrings_up(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer, Quirks(hcrst_kills_dbc=True))
    drv = make_driver.started(x)
    roundtrip(x, drv, b"before reset")
    op = read_register(x.mmio, 0, CAPLENGTH)
    x.mmio.write32(op + OPERATIONAL_REGS.offset("USBCMD"), USBCMD.encode(HCRST=1))
    drv.poll()  # sees DCE = 0 and runs the bring-up again
    assert drv.state is DbcState.ENABLED
    settle(drv)
    assert drv.counters.recoveries["dce_lost"] == 1
    roundtrip(x, drv, b"after reset")
    drv.stop()


#: the reset kinds a driver may meet before it polled
RESET_KINDS = ["hcrst", "hcrst_sbr", "hcrst_kills_dbc", "dce_cleared"]


@pytest.mark.parametrize(
    ("make_driver", "name"),
    [kind_param(kind, name) for kind in KINDS for name in RESET_KINDS],
    indirect=["make_driver"],
)
def test_reset_before_the_driver_polled_loses_nothing_acknowledged(
    closer: list[VirtualXhci], make_driver: DriverFactory, name: str
) -> None:
    """The host reads three messages whole and sends four transfers; the DbC completes every TD
    and writes its Transfer Event; THEN the controller is reset (HCRST killing the DbC, HCRST
    with DCST.SBR = 1 which it survives, HCRST killing it despite SBR, DCE cleared by another
    agent), before the driver polled. The events are in the driver's memory: afterwards read()
    returns every byte the host saw acknowledged, once, in order, and no message the host
    received is reported undelivered (a caller would send it again). A driver that brings the
    DbC up again without consuming those events first fails here."""
    kind = FAULT_KINDS[name]
    assert kind.inject is not None
    x = bench(closer, kind.quirks, **kind.bench)
    drv = make_driver.started(x)
    msgs = [b"target %d " % i * 300 for i in range(3)]
    for m in msgs:
        drv.write(m)
    host_got = b""
    while len(host_got) < sum(map(len, msgs)):
        host_got += x.host.recv(1 << 20, timeout=1.0)  # the model runs, the driver does not
    assert host_got == b"".join(msgs)
    sent = [bytes([i + 1]) * n for i, n in enumerate((3000, 1024, 5, 4096))]
    for data in sent:
        assert x.host.send(data, timeout=1.0) == len(data)  # acknowledged to the host
        if len(data) % 1024 == 0 and not make_driver.ends_transfers_at_packets:
            x.host.send(b"", timeout=1.0)  # ends the transfer in 64 KiB buffers
    assert events_waiting(x) >= len(msgs) + len(sent)  # one per TD at least, none consumed
    kind.inject(x)
    settle(drv, x=x)
    got = b""
    while True:
        try:
            got += drv.read(1 << 20, timeout=0.1)
        except DbcTimeout:
            break
    assert got == b"".join(sent)
    assert drv.take_undelivered() == ()
    assert drv.counters.recoveries["dce_lost"] == (0 if name == "hcrst_sbr" else 1)
    roundtrip(x, drv, b"after " + name.encode())
    drv.stop()


def test_surprise_removal_is_named_and_stop_frees_everything(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer)
    drv = make_driver.started(x)
    x.host.send(b"completed before the removal", timeout=1.0)  # landed, event written
    drv.write(b"in flight")  # queued; the model has not run since
    x.surprise_remove()
    with pytest.raises(DbcSurpriseRemoval):
        drv.poll()
    assert drv.state is DbcState.REMOVED
    # what had completed is handed back first; then the removal
    assert drv.read(1024, timeout=0.1) == b"completed before the removal"
    with pytest.raises(DbcSurpriseRemoval) as info:
        drv.read(1024, timeout=0.1)
    if make_driver.keeps_records:
        assert [m.data for m in info.value.undelivered] == [b"in flight"]  # the caller's message
        with pytest.raises(DbcSurpriseRemoval) as info:
            drv.write(b"more")
        assert info.value.undelivered == ()  # reported once
        assert drv.stop() == ()
    else:
        # the C ABI's removal carries no messages: stop() reports the one the removal cut
        assert [(m.data, m.delivered) for m in drv.stop()] == [(b"in flight", 0)]
    assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0


def test_surprise_removal_undelivered_reported_by_stop_when_not_raised(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer)
    drv = make_driver.started(x)
    drv.write(b"in flight")
    x.surprise_remove()
    with pytest.raises(DbcSurpriseRemoval):
        drv.poll()
    assert drv.state is DbcState.REMOVED
    (lost,) = drv.stop()
    assert lost.data == b"in flight"
    assert lost.reason.startswith("surprise removal")
    # the host had not read it: nothing of it can have arrived, and the report says so
    assert lost.delivered == 0
    assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0


@pytest.mark.parametrize("end", ["stop", "surprise_removal"])
def test_a_message_the_host_read_before_the_end_is_not_reported(
    closer: list[VirtualXhci], make_driver: DriverFactory, end: str
) -> None:
    """The host reads a message whole (its Transfer Event is written), then the driver stops,
    or the controller vanishes, before the driver polled: that message counts as delivered
    (a caller would send it again otherwise); only the one the host never read is reported,
    with nothing of it delivered."""
    x = bench(closer)
    drv = make_driver.started(x)
    drv.write(b"read by the host")
    assert x.host.recv(1024, timeout=1.0) == b"read by the host"  # the driver does not run
    drv.write(b"never read")
    if end == "surprise_removal":
        x.surprise_remove()
        with pytest.raises(DbcSurpriseRemoval) as info:
            drv.poll()
        lost = (*info.value.undelivered, *drv.stop())
    else:
        lost = drv.stop()
    assert [(m.data, m.delivered) for m in lost] == [(b"never read", 0)]
    assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0


def test_reset_with_the_event_ring_full_reports_what_may_have_arrived(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """A 16-TRB event ring runs full before the driver polls (the controller holds the next
    completion and stops), then HCRST: the held completion is gone (xHCI 1.2 4.9.4). The
    message whose event it was reached the host; the driver cannot know which, so every
    report after the reset allows that its bytes arrived (``delivered_max``), never claiming
    exactly 0 for a message the host has (a caller would send it twice)."""
    kind = FAULT_KINDS["hcrst"]
    assert kind.inject is not None
    x = bench(closer, kind.quirks, **kind.bench)
    drv = make_driver.started(x, ring_trbs=64, event_ring_trbs=16)
    ledger = Ledger()
    for i in range(20):
        data = b"m%02d" % i * 10
        ledger.written.append((drv.write(data), data))
    while True:
        try:
            ledger.host_got += x.host.recv(1 << 20, timeout=0.2)  # the driver does not run
        except DebugHostTimeout:
            break
    assert events_waiting(x) == 15  # full: every TRB but one
    assert 15 * 30 < len(ledger.host_got) < 20 * 30  # the held completion's message arrived
    kind.inject(x)
    settle(drv, x=x)
    ledger.note(drv.take_undelivered())
    assert ledger.reports and not any(m.exact for m in ledger.reports.values())
    tally = ledger.check()
    assert tally.clean, tally.problems
    roundtrip(x, drv, b"after the reset")
    drv.stop()


def test_ac64_zero_keeps_every_dma_address_below_4gib(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """AC64 = 0: every address the driver hands the controller is below 4 GiB (the strict model
    flags any other; the Python driver's rings are checked white-box too)."""
    x = bench(closer, ac64=False, dma_base=0x4000_0000)
    drv = make_driver.started(x)
    limit = 1 << 32
    if make_driver.white_box:  # where the rings live
        py: Any = drv
        assert py._out is not None and py._in is not None
        assert py._out.ring.base + py._out.ring.trbs * 16 <= limit
        assert py._in.ring.base + py._in.ring.trbs * 16 <= limit
    roundtrip(x, drv, b"x" * 70_000)  # the model flags any address >= 4 GiB (strict)
    drv.stop()


def test_write_without_a_host_times_out_naming_the_state(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    x = bench(closer)
    drv = make_driver.started(x)
    x.host.unplug()
    drv.poll()  # (a write without a poll may still be accepted, then reported undelivered)
    with pytest.raises(DbcTimeout, match="configure the DbC"):
        drv.write(b"nobody listens", timeout=0.05)
    assert drv.state is DbcState.ENABLED
    x.host.plug()
    settle(drv, x=x)
    roundtrip(x, drv, b"back")
    drv.stop()


def test_controller_reset_with_root_port_reset_quirk(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """After HCRST the DbC is brought up again, root ports reset again, host enumerates."""
    x = bench(closer, Quirks(hcrst_kills_dbc=True, enumerate_after_root_port_reset=True))
    drv = make_driver.started(x, port_reset=True)
    op = read_register(x.mmio, 0, CAPLENGTH)
    x.mmio.write32(op + OPERATIONAL_REGS.offset("USBCMD"), USBCMD.encode(HCRST=1))
    drv.poll()
    settle(drv, x=x)
    roundtrip(x, drv, b"after reset and port reset")
    drv.stop()


def test_small_event_ring_wraps_and_fills_without_loss(
    closer: list[VirtualXhci], make_driver: DriverFactory
) -> None:
    """A 16-TRB event ring wraps many times and runs full (the controller holds events until
    DCERDP moves): every message still arrives once, in order, and DCERDP is written once per
    drain, not once per event."""
    x = bench(closer)
    drv = make_driver.started(x, ring_trbs=64, event_ring_trbs=16)
    msgs = [b"%04d" % i * (i % 7 + 1) for i in range(300)]
    for m in msgs:
        drv.write(m)
    assert host_read(x, drv, sum(map(len, msgs))) == b"".join(msgs)
    drv.flush(timeout=2.0)
    c = drv.counters
    assert c.messages_to_host == 300 and c.events > 300
    assert c.erdp_writes < c.events
    drv.stop()
