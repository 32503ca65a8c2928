"""DbC port state machine (xHCI 1.2 7.6.6), one scenario per transition, register level."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dbc_harness.drivers.xhci.contexts import DBC_ENDPOINT_CONTEXT, DBC_OUT_EP_OFFSET, EPState
from dbc_harness.drivers.xhci.registers import DCCTRL, DCPORTSC, USBCMD
from dbc_harness.drivers.xhci.trb import CompletionCode, TRBType
from dbc_harness.fixtures.virtual import (
    DbcPortState,
    HostNotConfigured,
    PortLinkState,
    Timing,
    VirtualXhci,
)

from tests.virtual_helpers import MinimalDbcProducer

T = Timing()


def psc_events(b: MinimalDbcProducer) -> int:
    return sum(1 for e in b.events() if e.trb_type == TRBType.PortStatusChangeEvent)


@pytest.fixture
def x() -> Iterator[VirtualXhci]:
    with VirtualXhci() as xhci:
        yield xhci


def test_off_to_disconnected_without_host() -> None:
    with VirtualXhci(plugged=False) as x:
        b = MinimalDbcProducer(x)
        assert x.state is DbcPortState.OFF
        assert b.portsc()["CCS"] == 0
        b.program()
        b.enable()
        assert b.dcctrl()["DCE"] == 1
        x.advance(1_000_000)
        assert x.state is DbcPortState.DISCONNECTED
        p = b.portsc()
        assert (p["CCS"], p["PED"], p["PLS"]) == (0, 0, PortLinkState.RxDetect)
        assert b.dcctrl()["DCR"] == 0
        assert x.findings == []


def test_disconnected_to_enabled_on_link_up(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.program()
    b.enable()
    x.advance(T.link_up_us - 1)
    assert x.state is DbcPortState.DISCONNECTED
    x.advance(1)
    assert x.state is DbcPortState.ENABLED
    p = b.portsc()
    assert (p["CCS"], p["PED"], p["CSC"], p["PLS"], p["port_speed"]) == (1, 1, 1, 0, 4)
    assert b.dcctrl()["DCR"] == 0
    assert b.dcst()["debug_port_number"] == 0  # valid only once DCR = 1
    events = b.events()
    assert [e.trb_type for e in events] == [TRBType.PortStatusChangeEvent]
    assert events[0].fields["port_id"] == 5
    assert events[0].fields["completion_code"] == CompletionCode.Success


def test_enabled_to_resetting_to_enabled(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.program()
    b.enable()
    x.advance(T.link_up_us + T.host_reset_delay_us)
    assert x.state is DbcPortState.RESETTING
    p = b.portsc()
    assert (p["PR"], p["PLS"]) == (1, PortLinkState.HotReset)
    b.events()
    b.ack()
    x.advance(T.hot_reset_us)
    assert x.state is DbcPortState.ENABLED
    p = b.portsc()
    assert (p["PR"], p["PRC"], p["PED"], p["PLS"]) == (0, 1, 1, PortLinkState.U0)
    assert psc_events(b) == 1


def test_enabled_to_configured(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.program()
    b.enable()
    x.advance(T.link_up_us + T.host_reset_delay_us + T.hot_reset_us + T.enumeration_us - 1)
    assert x.state is DbcPortState.ENABLED
    x.advance(1)
    assert x.state is DbcPortState.CONFIGURED
    ctrl = b.dcctrl()
    assert (ctrl["DCR"], ctrl["DRC"]) == (1, 1)
    assert ctrl["device_address"] != 0
    assert ctrl["debug_max_burst"] == 15
    assert b.dcst()["debug_port_number"] == 5
    ep = DBC_ENDPOINT_CONTEXT.parse(b.ctx.view, DBC_OUT_EP_OFFSET)
    assert ep["ep_state"] == EPState.Running
    assert x.host.configured
    d = x.host.device
    assert d is not None
    assert (d.id_vendor, d.id_product, d.bcd_device, d.protocol) == (0x1D6B, 0x10, 0x10, 0)
    assert (d.manufacturer, d.product, d.serial) == b.strings
    assert d.langids == (0x0409,)
    b.ack()
    assert b.dcctrl()["DRC"] == 0  # RW1C


def test_configured_to_disconnected_on_unplug(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.bring_up()
    b.events()
    x.host.unplug()
    assert x.state is DbcPortState.DISCONNECTED
    p = b.portsc()
    assert (p["CCS"], p["PED"], p["CSC"]) == (0, 0, 1)
    ctrl = b.dcctrl()
    assert (ctrl["DCR"], ctrl["DRC"], ctrl["device_address"]) == (0, 1, 0)
    assert b.dcst()["debug_port_number"] == 0
    assert psc_events(b) == 1
    with pytest.raises(HostNotConfigured):
        x.host.recv(1, timeout=0.01)
    b.ack()
    x.host.plug()
    b.wait(lambda: b.dcctrl()["DCR"] == 1, 200_000)
    assert x.state is DbcPortState.CONFIGURED


def test_configured_hot_reset_reenumerates(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.bring_up()
    enumerations = x.host.enumerations
    x.host.reset("hot")
    assert x.state is DbcPortState.RESETTING
    ctrl = b.dcctrl()
    assert (ctrl["DCR"], ctrl["DRC"]) == (0, 1)
    b.ack()
    x.advance(T.hot_reset_us)
    assert x.state is DbcPortState.ENABLED and b.portsc()["PRC"] == 1
    x.advance(T.enumeration_us)
    assert x.state is DbcPortState.CONFIGURED
    assert x.host.enumerations == enumerations + 1


def test_set_configuration_zero_and_back(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.bring_up()
    x.host.set_configuration(0)
    assert x.state is DbcPortState.ENABLED
    ctrl = b.dcctrl()
    assert (ctrl["DCR"], ctrl["DRC"]) == (0, 1)
    assert b.portsc()["CCS"] == 1
    b.ack()
    x.host.set_configuration(1)
    assert x.state is DbcPortState.CONFIGURED
    assert b.dcctrl()["DRC"] == 1


@pytest.mark.parametrize("lse", [0, 1])
def test_link_error_enters_error_state(lse: int) -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.program()
        b.enable(lse=lse)
        b.wait(lambda: b.dcctrl()["DCR"] == 1, 200_000)
        b.ack()
        b.events()
        x.host.link_error()
        assert x.state is DbcPortState.ERROR
        p = b.portsc()
        assert (p["PLS"], p["PLC"], p["PED"], p["CCS"]) == (PortLinkState.Inactive, 1, 0, 1)
        assert b.dcctrl()["DCR"] == 0
        assert psc_events(b) == lse  # PLC only generates an event when LSE = 1
        x.host.reset("warm")
        assert x.state is DbcPortState.RESETTING
        x.advance(T.warm_reset_us + T.enumeration_us)
        assert x.state is DbcPortState.CONFIGURED


def test_port_config_error_sets_cec(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.bring_up()
    b.events()
    x.host.link_error("config")
    assert x.state is DbcPortState.ERROR
    p = b.portsc()
    assert (p["CEC"], p["PLC"], p["PLS"]) == (1, 0, PortLinkState.Inactive)
    assert psc_events(b) == 1
    b.write("DCPORTSC", b.read("DCPORTSC"))
    assert b.portsc()["CEC"] == 0  # RW1C


def test_software_disable_port(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.bring_up()
    b.write("DCPORTSC", DCPORTSC.replace(b.read("DCPORTSC"), PED=0))
    assert x.state is DbcPortState.DISABLED
    p = b.portsc()
    assert (p["PED"], p["PLS"]) == (0, PortLinkState.Disabled)
    assert not x.host.configured
    b.write("DCPORTSC", DCPORTSC.replace(b.read("DCPORTSC"), PED=1))
    assert x.state is DbcPortState.DISCONNECTED
    b.wait(lambda: b.dcctrl()["DCR"] == 1, 200_000)


def test_change_bits_are_rw1c_and_ped_survives_ack(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.bring_up()
    x.host.unplug()
    x.host.plug()
    x.advance(T.link_up_us)
    value = b.read("DCPORTSC")
    assert DCPORTSC.get(value, "CSC") == 1
    b.write("DCPORTSC", value)  # read-modify-write ack keeps PED = 1
    p = b.portsc()
    assert (p["CSC"], p["PED"]) == (0, 1)
    assert x.state is DbcPortState.ENABLED


def test_dce_clear_turns_dbc_off(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.bring_up()
    b.write("DCCTRL", 0)
    assert x.state is DbcPortState.OFF
    assert DCCTRL.decode(b.read("DCCTRL")) == DCCTRL.decode(DCCTRL.encode(debug_max_burst=15))
    p = b.portsc()
    assert (p["CCS"], p["PED"], p["CSC"], p["PRC"], p["PLC"], p["CEC"]) == (0, 0, 0, 0, 0, 0)
    assert not x.host.configured


@pytest.mark.parametrize(
    ("sbr", "kills", "survives"), [(False, False, False), (True, False, True), (True, True, False)]
)
def test_hcrst_resets_dbc_unless_sbr(sbr: bool, kills: bool, survives: bool) -> None:
    from dbc_harness.fixtures.virtual import Quirks

    with VirtualXhci(sbr=sbr, quirks=Quirks(hcrst_kills_dbc=kills)) as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        assert b.dcst()["SBR"] == int(sbr)
        x.mmio.write32(0x80, USBCMD.encode(HCRST=1))
        if survives:
            assert x.state is DbcPortState.CONFIGURED and b.dcctrl()["DCE"] == 1
            assert b.read("DCCP") == b.ctx.device_address & 0xFFFFFFFF
        else:
            assert x.state is DbcPortState.OFF and b.dcctrl()["DCE"] == 0
            assert b.read("DCCP") == 0 and b.read("DCERSTSZ") == 0
        usbcmd = x.mmio.read32(0x80)
        assert USBCMD.get(usbcmd, "HCRST") == 1  # reads 1 until the reset completes
        x.advance(1000)
        assert USBCMD.get(x.mmio.read32(0x80), "HCRST") == 0
        assert x.mmio.read32(0x84) & 1  # HCHalted


def test_doorbell_dead_while_drc_set(x: VirtualXhci) -> None:
    b = MinimalDbcProducer(x)
    b.program()
    b.enable()
    b.wait(lambda: b.dcctrl()["DCR"] == 1, 200_000)
    b.events()
    b.queue_out(b"early")
    b.ring_doorbell(0)  # DRC still set: ignored
    x.advance(1000)
    assert x.host.pending_in_bytes() == 0
    assert b.transfer_events() == []
    b.ack()
    x.advance(1000)
    assert x.host.pending_in_bytes() == 0  # still needs a doorbell after DRC clears
    b.ring_doorbell(0)
    assert x.host.recv(64, timeout=0.01) == b"early"
