"""The firmware behind the virtual xHCI (fixtures/virtual/firmware.py): USB Legacy Support
(xHCI 1.2 7.1) with a BIOS that owns the controller at power-on, hands it over N ms (virtual time)
after the OS asks, or never; the driver's BIOS handoff; and what a wrong handoff is named."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from dbc_harness.drivers.dbc import DbcDriver
from dbc_harness.drivers.dbc.bringup import HC_BIOS_OWNED, HC_OS_OWNED, bios_handoff
from dbc_harness.drivers.xhci.registers import USBCMD, USBLEGCTLSTS, USBSTS
from dbc_harness.fixtures.virtual import ConfigError, SpecViolation, VirtualXhci
from dbc_harness.fixtures.virtual.firmware import FirmwareConfig
from dbc_harness.fixtures.virtual.parts import build_controller

MS = 1000.0


def owned(handoff_ms: float | None = 20.0, **kw: bool) -> VirtualXhci:
    fw = FirmwareConfig(bios_owned=True, handoff_ms=handoff_ms, **kw)
    return VirtualXhci(strict=True, firmware=fw)


@pytest.fixture
def x() -> Iterator[VirtualXhci]:
    ctl = owned()
    yield ctl
    ctl.close()


def legsup(x: VirtualXhci) -> int:
    assert x.regs.legacy_offset is not None
    return x.regs.legacy_offset


def test_bios_owns_at_power_on_with_its_smi_enabled(x: VirtualXhci) -> None:
    value = x.mmio.read32(legsup(x))
    assert value & HC_BIOS_OWNED and not value & HC_OS_OWNED
    ctl = x.mmio.read32(legsup(x) + 4)
    assert USBLEGCTLSTS.get(ctl, "smi_on_os_ownership_enable") == 1
    assert x.mmio.read8(legsup(x) + 2) == 1  # byte reads of the semaphores are fine


def test_release_comes_handoff_ms_after_the_request(x: VirtualXhci) -> None:
    off = legsup(x)
    x.advance(50 * MS)  # nothing happens before the OS asks
    assert x.mmio.read32(off) & HC_BIOS_OWNED
    x.mmio.write32(off, x.mmio.read32(off) | HC_OS_OWNED)
    # the change sets SMI on OS Ownership Change (RW1C)
    ctl = x.mmio.read32(off + 4)
    assert USBLEGCTLSTS.get(ctl, "smi_on_os_ownership_change") == 1
    x.advance(19 * MS)
    assert x.mmio.read32(off) & HC_BIOS_OWNED
    x.advance(1.5 * MS)
    assert not x.mmio.read32(off) & HC_BIOS_OWNED
    assert x.firmware.requested_at_us is not None
    assert x.firmware.released_at_us == pytest.approx(x.firmware.requested_at_us + 20 * MS)
    x.mmio.write32(off + 4, ctl)  # write 1 to clear
    assert USBLEGCTLSTS.get(x.mmio.read32(off + 4), "smi_on_os_ownership_change") == 0


def test_os_owned_byte_write_is_a_request(x: VirtualXhci) -> None:
    x.mmio.write8(legsup(x) + 3, 0x01)
    x.advance(25 * MS)
    assert x.mmio.read32(legsup(x)) & (HC_BIOS_OWNED | HC_OS_OWNED) == HC_OS_OWNED
    assert x.findings == []


def test_smi_disabled_first_means_the_bios_never_hears(x: VirtualXhci) -> None:
    off = legsup(x)
    x.mmio.write32(off + 4, 0)  # SMIs off before asking: the handler never runs
    x.mmio.write32(off, x.mmio.read32(off) | HC_OS_OWNED)
    x.advance(500 * MS)
    assert x.mmio.read32(off) & HC_BIOS_OWNED


def test_firmware_left_the_controller_running_until_the_handoff() -> None:
    with owned(5.0, left_running=True) as y:
        assert USBSTS.get(y.mmio.read32(0x84), "HCH") == 0
        assert USBCMD.get(y.mmio.read32(0x80), "RS") == 1
        assert bios_handoff(y.mmio, y.clock) == "released"
        assert USBSTS.get(y.mmio.read32(0x84), "HCH") == 1


def test_driver_hands_off_and_disables_the_smis(x: VirtualXhci) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock)
    t0 = x.now_us
    drv.start(timeout=5.0)
    assert x.firmware.released_at_us is not None and x.firmware.released_at_us - t0 >= 20 * MS
    ctl = x.mmio.read32(legsup(x) + 4)
    assert USBLEGCTLSTS.get(ctl, "usb_smi_enable") == 0
    assert USBLEGCTLSTS.get(ctl, "smi_on_os_ownership_enable") == 0
    assert USBLEGCTLSTS.get(ctl, "smi_on_os_ownership_change") == 0
    assert drv.counters.recoveries["bios_handoff_timeout"] == 0
    drv.stop()
    assert x.findings == []


def test_broken_bios_the_driver_times_out_warns_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with build_controller("broken-bios", strict=True) as y:
        drv = DbcDriver(y.mmio, y.dma, clock=y.clock)
        t0 = y.clock.monotonic()
        with caplog.at_level(logging.WARNING, logger="dbc_harness.drivers.dbc"):
            drv.start(timeout=5.0)
        assert y.clock.monotonic() - t0 >= 1.0  # waited its 1 s deadline, then went on
        assert "BIOS handoff failed" in caplog.text
        assert drv.counters.recoveries["bios_handoff_timeout"] == 1
        assert y.mmio.read32(legsup(y)) & HC_BIOS_OWNED  # the BIOS still claims it
        drv.write(b"anyway")
        drv.stop()
        assert y.findings == []


def test_no_bios_ownership_is_a_quick_no_op() -> None:
    with VirtualXhci(strict=True) as y:
        assert bios_handoff(y.mmio, y.clock) == "os-owned"
        assert y.now_us == 0


# -- what a wrong handoff is called ------------------------------------------------------------


def test_clearing_the_bios_semaphore_without_asking_is_a_finding(x: VirtualXhci) -> None:
    off = legsup(x)
    with pytest.raises(SpecViolation, match="XHCI-LEGSUP-BIOS-SEMAPHORE"):
        x.mmio.write32(off, x.mmio.read32(off) & ~HC_BIOS_OWNED)
    assert x.mmio.read32(off) & HC_BIOS_OWNED  # the write did not take the BIOS's bit


def test_forcing_it_after_asking_is_a_takeover_not_a_finding(x: VirtualXhci) -> None:
    off = legsup(x)
    x.mmio.write32(off, x.mmio.read32(off) | HC_OS_OWNED)
    x.advance(1 * MS)
    x.mmio.write32(off, x.mmio.read32(off) & ~HC_BIOS_OWNED)  # Linux after its 1 s
    assert x.firmware.forced and x.findings == []


def test_writing_the_bios_byte_is_a_finding(x: VirtualXhci) -> None:
    with pytest.raises(SpecViolation, match="XHCI-LEGSUP-WRONG-BYTE"):
        x.mmio.write8(legsup(x) + 2, 0x01)


def test_rsvdp_bits_are_a_finding(x: VirtualXhci) -> None:
    off = legsup(x)
    with pytest.raises(SpecViolation, match="MMIO-RSVDP"):
        x.mmio.write32(off, x.mmio.read32(off) | HC_OS_OWNED | (1 << 20))


def test_dce_without_any_handoff_is_a_finding(x: VirtualXhci) -> None:
    from tests.virtual_helpers import MinimalDbcProducer

    b = MinimalDbcProducer(x)
    b.program()
    with pytest.raises(SpecViolation, match="XHCI-LEGSUP-NO-HANDOFF"):
        b.enable()


def test_bad_firmware_config_is_a_named_error() -> None:
    with pytest.raises(ConfigError, match="handoff_ms"):
        FirmwareConfig(bios_owned=True, handoff_ms=-1)


def test_native_wait_without_a_deadline_stops_at_its_source_line() -> None:
    """A C driver that polls HC BIOS Owned with no timeout, on a BIOS that never lets go: the
    native runner stops it (virtual-time budget) and names the line."""
    pytest.importorskip("unicorn")
    from dbc_harness.drivers.native import Environment, Machine, VirtualTimeExhausted, bindings
    from dbc_harness.drivers.native.cc import compile_object

    src = (
        "extern void udelay(unsigned long);\n"
        "unsigned handoff(volatile unsigned *legsup) {\n"
        "\t*legsup |= 1u << 24;\n"
        "\twhile (*legsup & (1u << 16))\n"
        "\t\tudelay(10);\n"
        "\treturn *legsup;\n"
        "}\n"
    )
    with build_controller("broken-bios", strict=True) as y:
        env = Environment(functions={**bindings.COMMON}, dma="identity")
        m = Machine(compile_object(src, name="naive_handoff"), env, bench=y, virtual_time=2.0)
        try:
            with pytest.raises(VirtualTimeExhausted) as info:
                m.call("handoff", m.phys_to_virt(m.bar_phys or 0) + legsup(y))
            assert info.value.source in ("naive_handoff.c:4", "naive_handoff.c:5")
            assert y.findings == []  # the request itself was right
        finally:
            m.close()
