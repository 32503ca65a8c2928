"""One scenario per quirk/fault of real parts (defaults = a well-behaved Intel-like part)."""

from __future__ import annotations

import pytest
from dbc_harness.drivers.xhci.contexts import DBC_ENDPOINT_CONTEXT, DBC_OUT_EP_OFFSET, EPState
from dbc_harness.drivers.xhci.registers import PORT_REGS_OFFSET, PORTSC
from dbc_harness.drivers.xhci.trb import CompletionCode
from dbc_harness.fixtures.virtual import (
    DbcPortState,
    HostNotConfigured,
    HostStall,
    HostTransferError,
    Quirks,
    Timing,
    TransferFault,
    VirtualXhci,
)
from dbc_harness.fixtures.virtual.quirks import EventPointerMode, FaultCompletion

from tests.virtual_helpers import MinimalDbcProducer

T = Timing()


def up(x: VirtualXhci) -> MinimalDbcProducer:
    b = MinimalDbcProducer(x)
    b.bring_up()
    b.events()
    return b


@pytest.mark.parametrize(("ids", "expected"), [(None, (2, 3)), ((0, 1), (0, 1))])
def test_endpoint_id_numbering(ids: tuple[int, int] | None, expected: tuple[int, int]) -> None:
    quirks = Quirks() if ids is None else Quirks(endpoint_ids=ids)
    with VirtualXhci(quirks=quirks) as x:
        b = up(x)
        b.queue_out(b"o")
        b.post_in(1024)
        b.ring_doorbell(0)
        b.ring_doorbell(1)
        x.host.send(b"i", timeout=0.01)
        x.host.recv(8, timeout=0.01)
        ev = b.transfer_events()
        assert sorted(e.fields["endpoint_id"] for e in ev) == sorted(expected)


def test_enumeration_only_after_root_port_reset() -> None:
    with VirtualXhci(quirks=Quirks(enumerate_after_root_port_reset=True)) as x:
        b = MinimalDbcProducer(x)
        b.program()
        b.enable()
        x.advance(1_000_000)
        assert x.state is DbcPortState.DISCONNECTED
        # reset every not-connected USB3 root port (ports 5..8 per the Supported Protocol cap)
        for port in range(5, 9):
            off = 0x80 + PORT_REGS_OFFSET + 0x10 * (port - 1)
            sc = x.mmio.read32(off)
            if not PORTSC.get(sc, "CCS"):
                x.mmio.write32(off, PORTSC.encode(PP=1, PR=1))
        b.wait(lambda: b.dcctrl()["DCR"] == 1, 200_000)
        sc = x.mmio.read32(0x80 + PORT_REGS_OFFSET + 0x10 * 4)
        assert PORTSC.get(sc, "PRC") == 1 and PORTSC.get(sc, "PR") == 0
        assert x.findings == []


@pytest.mark.parametrize("quirk", [False, True])
def test_spurious_stall_after_clear_halt(quirk: bool) -> None:
    with VirtualXhci(quirks=Quirks(spurious_stall_on_clear_halt=quirk)) as x:
        b = up(x)
        addr = b.post_in(1024)
        b.ring_doorbell(1)
        x.advance(10)
        x.host.clear_halt("out")  # nothing in flight
        x.advance(10)
        ev = b.transfer_events()
        if not quirk:
            assert ev == []
            return
        assert len(ev) == 1
        e = ev[0].fields
        assert e["completion_code"] == CompletionCode.StallError
        assert e["trb_pointer"] == addr and e["trb_transfer_length"] == 1024
        assert b.dcctrl()["HIT"] == 0  # the endpoint is not halted
        x.host.send(b"still fine", timeout=0.01)  # the request stayed queued
        assert b.in_data(10) == b"still fine"


def test_dcst_er_lags() -> None:
    with VirtualXhci(quirks=Quirks(dcst_er_lag_us=500)) as x:
        b = up(x)
        x.advance(1000)
        assert b.dcst()["ER"] == 0
        b.queue_out(b"e")
        b.ring_doorbell(0)
        assert x.host.recv(8, timeout=0.001) == b"e"  # the TD completes when the host reads
        assert b.events(update_erdp=False)  # the event is in memory ...
        assert b.dcst()["ER"] == 0  # ... but ER has not caught up
        x.advance(600)
        assert b.dcst()["ER"] == 1


def test_no_64bit_mmio_part_works_with_32bit_pairs() -> None:
    with VirtualXhci(quirks=Quirks(no_64bit_mmio=True)) as x:
        up(x)  # the helper writes 64-bit registers as two 32-bit writes, low dword first
        assert x.state is DbcPortState.CONFIGURED
        assert x.findings == []


def test_no_64bit_mmio_read64_is_a_finding() -> None:
    with VirtualXhci(strict=False, quirks=Quirks(no_64bit_mmio=True)) as x:
        assert x.mmio.read64(x.dbc_offset + 0x30) == 0xFFFF_FFFF_FFFF_FFFF
        assert [f.rule for f in x.findings] == ["MMIO-64BIT-UNSUPPORTED"]


@pytest.mark.parametrize("mode", ["zero", "nonmonotonic"])
def test_transfer_event_pointer_quirks(mode: EventPointerMode) -> None:
    with VirtualXhci(quirks=Quirks(transfer_event_pointer=mode)) as x:
        b = up(x)
        addrs = [b.queue_out(b"p", offset=64 * i) for i in range(4)]
        b.ring_doorbell(0)
        for _ in range(4):
            x.host.recv(8, timeout=0.01)
        ptrs = [e.fields["trb_pointer"] for e in b.transfer_events()]
        if mode == "zero":
            assert ptrs == [0, 0, 0, 0]
        else:
            assert ptrs == [addrs[0], addrs[0], addrs[2], addrs[2]]
            assert ptrs != sorted(set(ptrs)) or len(set(ptrs)) < 4


@pytest.mark.parametrize(
    ("completion", "code"),
    [("babble", CompletionCode.BabbleDetectedError),
     ("transaction_error", CompletionCode.USBTransactionError)],
)  # fmt: skip
def test_transfer_fault_halts_and_retries(completion: FaultCompletion, code: int) -> None:
    quirks = Quirks(transfer_faults=(TransferFault("out", 1, completion),))
    with VirtualXhci(quirks=quirks) as x:
        b = up(x)
        b.queue_out(b"zero")
        bad = b.queue_out(b"one", offset=64)
        b.ring_doorbell(0)
        assert x.host.recv(64, timeout=0.01) == b"zero"
        with pytest.raises(HostStall):
            x.host.recv(64, timeout=0.01)
        ev = b.transfer_events()
        assert [e.fields["completion_code"] for e in ev] == [CompletionCode.Success, code]
        assert ev[1].fields["trb_pointer"] == bad
        assert b.dcctrl()["HOT"] == 1
        ctx = DBC_ENDPOINT_CONTEXT.parse(b.ctx.view, DBC_OUT_EP_OFFSET)
        assert ctx["ep_state"] == EPState.Halted and ctx["tr_dequeue_pointer"] == bad
        x.host.clear_halt("in")
        assert b.dcctrl()["HOT"] == 0
        b.ring_doorbell(0)
        assert x.host.recv(64, timeout=0.01) == b"one"  # the TD is retried from the context


def test_transfer_fault_on_the_in_ring() -> None:
    quirks = Quirks(transfer_faults=(TransferFault("in", 0, "transaction_error"),))
    with VirtualXhci(quirks=quirks) as x:
        b = up(x)
        addr = b.post_in(1024)
        b.ring_doorbell(1)
        with pytest.raises(HostTransferError) as info:
            x.host.send(b"lost", timeout=0.01)
        assert info.value.code == CompletionCode.USBTransactionError
        ev = b.transfer_events()
        assert [(e.fields["completion_code"], e.fields["trb_pointer"]) for e in ev] == [
            (CompletionCode.USBTransactionError, addr)
        ]
        assert b.dcctrl()["HIT"] == 1
        x.host.clear_halt("out")
        b.ring_doorbell(1)
        assert x.host.send(b"again", timeout=0.01) == 5  # the TD is retried
        assert b.in_data(5) == b"again"


def test_unplug_in_the_middle_of_a_transfer() -> None:
    # host_buffer=0: the host application reads straight off the wire
    with VirtualXhci(host_buffer=0, quirks=Quirks(unplug_after_out_bytes=1500)) as x:
        b = up(x)
        b.queue_out(b"a" * 1000)
        b.queue_out(b"b" * 1000, offset=1024)
        b.ring_doorbell(0)
        assert x.host.recv(4096, timeout=0.01) == b"a" * 1000
        assert x.host.recv(4096, timeout=0.01) == b"b" * 500  # then the cable goes
        assert x.state is DbcPortState.DISCONNECTED
        assert b.portsc()["CCS"] == 0 and b.dcctrl()["DRC"] == 1
        ev = b.transfer_events()
        assert len(ev) == 1  # the second TD was on the wire when the cable went: no event
        with pytest.raises(HostNotConfigured):
            x.host.recv(4096, timeout=0.01)


def test_unplug_mid_transfer_with_host_buffering() -> None:
    with VirtualXhci(quirks=Quirks(unplug_after_out_bytes=1500)) as x:
        b = up(x)
        first = b.queue_out(b"a" * 1000)
        b.queue_out(b"b" * 1000, offset=1024)
        b.ring_doorbell(0)
        x.advance(10)
        assert x.state is DbcPortState.DISCONNECTED
        ev = b.transfer_events()
        assert [e.fields["trb_pointer"] for e in ev] == [first]
        # what the host had taken off the wire stays readable, the rest is gone
        assert x.host.recv(4096, timeout=0.01) == b"a" * 1000
        with pytest.raises(HostNotConfigured):
            x.host.recv(4096, timeout=0.01)


def test_host_side_halt_with_td_in_flight() -> None:
    with VirtualXhci() as x:
        b = up(x)
        addr = b.post_in(1024)
        b.ring_doorbell(1)
        x.advance(10)
        x.host.halt("out")
        ctrl = b.dcctrl()
        assert (ctrl["HIT"], ctrl["HOT"]) == (1, 0)
        ev = b.transfer_events()
        assert [(e.fields["completion_code"], e.fields["trb_pointer"],
                 e.fields["trb_transfer_length"]) for e in ev] == [
            (CompletionCode.StallError, addr, 1024)
        ]  # fmt: skip
        with pytest.raises(HostStall):
            x.host.send(b"x", timeout=0.01)
        x.host.clear_halt("out")
        b.ring_doorbell(1)
        assert x.host.send(b"after", timeout=0.01) == 5
        assert b.in_data(5) == b"after"


def test_software_halt_out_ring() -> None:
    from dbc_harness.drivers.xhci.registers import DCCTRL

    with VirtualXhci() as x:
        b = up(x)
        b.write("DCCTRL", DCCTRL.replace(b.read("DCCTRL"), HOT=1))
        assert b.dcctrl()["HOT"] == 1
        with pytest.raises(HostStall):
            x.host.recv(16, timeout=0.01)


def test_surprise_removal_reads_all_ones() -> None:
    with VirtualXhci() as x:
        b = up(x)
        x.surprise_remove()
        assert b.read("DCCTRL") == 0xFFFF_FFFF
        assert x.mmio.read32(0) == 0xFFFF_FFFF
        b.write("DCCTRL", 0)  # dropped
        assert not x.host.configured
        with pytest.raises(HostNotConfigured):
            x.host.recv(16, timeout=0.01)


def test_dbc_left_enabled_by_firmware() -> None:
    from dbc_harness.drivers.xhci.registers import DCCTRL

    with VirtualXhci(quirks=Quirks(firmware_left_enabled=True)) as x:
        b = MinimalDbcProducer(x)
        ctrl = b.dcctrl()
        assert (ctrl["DCE"], ctrl["DCR"]) == (1, 1)
        assert b.read("DCCP") != 0
        b.write("DCCTRL", 0)  # take over: disable first
        b.wait(lambda: b.dcctrl()["DCE"] == 0, 10_000)
        assert b.read("DCCTRL") == DCCTRL.encode(debug_max_burst=15)
        b.bring_up()
        b.queue_out(b"mine now")
        b.ring_doorbell(0)
        assert x.host.recv(64, timeout=0.01) == b"mine now"
        assert x.findings == []
