"""Named parts (fixtures/virtual/parts): every profile loads, looks like its part from the
driver's side (PCI IDs, BAR size, capability list, DbC position, endpoint IDs, burst), and the
Python reference driver passes its echo and fault suite on each of them with zero findings.

Strict mode and deterministic time throughout: any finding raises and fails the test.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbc_harness.drivers.dbc import DbcDriver, DbcState, DbcSurpriseRemoval, DbcTimeout
from dbc_harness.drivers.dbc.bringup import (
    HANDOFF_TIMEOUT,
    PCI_VENDOR_ID_INTEL,
    PORT_RESET_AFTER,
    extended_capabilities,
    find_dbc,
)
from dbc_harness.drivers.xhci.registers import (
    CAPLENGTH,
    DCCTRL,
    HCCPARAMS1,
    OPERATIONAL_REGS,
    USBCMD,
    USBSTS,
    read_register,
)
from dbc_harness.fixtures.virtual import Quirks, VirtualXhci
from dbc_harness.fixtures.virtual.host import HostDirection
from dbc_harness.fixtures.virtual.parts import (
    HERE,
    PartInvalid,
    PartProfile,
    UnknownPart,
    all_parts,
    build_controller,
    load_part,
    parse_part,
    part_names,
)

from tests.driver_kinds import (
    HOST_ACTIONS,
    HostAction,
    host_read,
    lose_host_and_return,
    reconnect_cycles,
    roundtrip,
    settle,
)

PARTS = part_names()


@pytest.fixture(params=PARTS)
def part(request: pytest.FixtureRequest) -> PartProfile:
    return load_part(request.param)


@pytest.fixture
def x(part: PartProfile) -> Iterator[VirtualXhci]:
    ctl = build_controller(part, strict=True)
    yield ctl
    findings = list(ctl.findings)
    ctl.close()
    assert findings == []


def started(x: VirtualXhci, part: PartProfile, **options: Any) -> DbcDriver:
    """The driver with its DEFAULT options (nothing about the part is passed: it works out
    dword-only MMIO and the root-port reset itself) plus what a test sizes."""
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, **options)
    drv.start(timeout=5.0)
    assert drv.state is DbcState.CONFIGURED
    return drv


# -- the profiles themselves -----------------------------------------------------------------


def test_the_required_families_are_there() -> None:
    parts = all_parts()
    vendors = {p.vendor_id for p in parts.values()}
    assert {"generic", "intel-sunrise-point", "intel-tiger-lake", "amd-renoir",
            "renesas-upd720201", "intel-alpine-ridge"} <= set(parts)  # fmt: skip
    assert {0x8086, 0x1022, 0x1912} <= vendors
    assert parts["amd-renoir"].bar0_size == 1 << 20
    assert parts["intel-sunrise-point"].bar0_size == 64 << 10
    assert parts["intel-tiger-lake"].dbc_shares_page
    assert not parts["renesas-upd720201"].dbc_shares_page


def test_every_quirk_and_firmware_names_its_source(part: PartProfile) -> None:
    for quirk in part.quirk_names:
        assert quirk in part.sources, f"{part.name}: quirk {quirk} has no [sources] entry"
    if part.firmware.bios_owned:
        assert "firmware" in part.sources, f"{part.name}: BIOS ownership without a source"
    assert part.title and part.reproduces
    record = part.describe()
    assert record["pci_id"] == f"{part.vendor_id:04x}:{part.device_id:04x}"


def test_unknown_part_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPart, match="amd-renoir"):
        load_part("amd-zen9")


def _generic() -> dict[str, Any]:
    return tomllib.loads((HERE / "intel-tiger-lake.toml").read_text())


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *tables, key = path.split(".")
    node = data
    for t in tables:
        node = node.setdefault(t, {})
    if value is None:
        node.pop(key, None)
    else:
        node[key] = value
    return data


BAD_PROFILES = [
    ("colour", "blue", "unknown top-level keys"),
    ("pci.vendor_id", 0xFFFF, "16-bit PCI ID"),
    ("pci.bdf", "00:20.0", "out of range"),
    ("pci.bdf", "banana", "not a PCI address"),
    ("pci.bdf", "00:14.3", "needs function 0"),
    ("pci.bar0_size", 0x3000, "power of two"),
    ("controller.dbc_shares_page", False, "dbc_shares_page = false"),
    ("controller.debug_max_burst", 16, "0..15"),
    ("controller.endpoint_ids", [2], r"\[OUT, IN\]"),
    ("controller.capabilities", [[0x8000, "usb3"], [0x8700, "dbc"]], "reaches at most"),
    ("controller.capabilities", [[0x86F8, "usb3"], [0x8700, "dbc"]], "overlaps"),
    ("controller.capabilities", [[0x8600, "usb2"], [0x8700, "dbc"]], "USB 3"),
    ("controller.capabilities", [[0x2000, "usb3"], [0x2100, "dbc"]], "runtime registers"),
    ("controller.capabilities", [[0x8600, "vendor99"], [0x8640, "usb3"], [0x8700, "dbc"]], "0xC0"),
    ("controller.capabilities", [[0x8000, "usb3"], [0x8100, "vendorc0"]], "lists no DbC"),
    ("controller.wobble", 1, "unknown keys"),
    ("firmware.handoff_ms", "soon", "never"),
    ("firmware.handoff_ms", -1, "handoff_ms"),
    ("quirks.dcst_er_lag_us", -5, "dcst_er_lag_us"),
    ("quirks.unplug_after_out_bytes", 5, "unknown keys"),
    ("quirks.transfer_event_pointer", "sideways", "transfer_event_pointer"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_PROFILES)
def test_invalid_profiles_are_named_errors(path: str, value: Any, message: str) -> None:
    data = _set(_generic(), path, value)
    with pytest.raises(PartInvalid, match=message):
        parse_part(data, "broken.toml")


def test_a_profile_file_must_be_named_after_its_part(tmp_path: Path) -> None:
    path = tmp_path / "other-name.toml"
    path.write_text((HERE / "generic.toml").read_text())
    from dbc_harness.fixtures.virtual.parts import load_part_file

    with pytest.raises(PartInvalid, match=r"generic\.toml"):
        load_part_file(path)
    (tmp_path / "bad.toml").write_text("name = [")
    with pytest.raises(PartInvalid, match=r"bad\.toml"):
        load_part_file(tmp_path / "bad.toml")


# -- what a driver sees of each part ------------------------------------------------------------


def test_registers_look_like_the_part(x: VirtualXhci, part: PartProfile) -> None:
    assert x.mmio.size == part.bar0_size
    assert find_dbc(x.mmio) == part.dbc_offset
    caps = extended_capabilities(x.mmio)
    if part.capabilities is not None:
        assert [off for off, _cid in caps] == [off for off, _kind in part.capabilities]
    ids = [cid for _off, cid in caps]
    assert 0x0A in ids and 2 in ids
    hcc = read_register(x.mmio, 0x10, HCCPARAMS1)
    assert HCCPARAMS1.get(hcc, "AC64") == int(part.ac64)
    dcctrl = x.mmio.read32(part.dbc_offset + 0x20)
    assert DCCTRL.get(dcctrl, "debug_max_burst") == part.debug_max_burst
    legsup = x.mmio.read32(x.regs.legacy_offset or 0)
    assert bool(legsup & (1 << 16)) == part.firmware.bios_owned


def test_pci_function_carries_the_profile(part: PartProfile) -> None:
    from dbc_harness.fixtures.bench import VirtualBench

    with VirtualBench(part=part.name, free_running=False) as bench:
        assert bench.pci is not None
        pci = bench.pci

        def cfg(where: tuple[int, int, int], offset: int) -> int:
            value = pci.read_config(*where, offset, 4)
            assert value is not None, f"nothing at {where}"
            return value

        assert cfg(part.bdf, 0) == part.device_id << 16 | part.vendor_id
        assert cfg(part.bdf, 8) >> 8 == 0x0C0330
        pci.write_config(*part.bdf, 0x10, 4, 0xFFFF_FFFF)
        pci.write_config(*part.bdf, 0x14, 4, 0xFFFF_FFFF)
        mask = cfg(part.bdf, 0x10) & ~0xF | cfg(part.bdf, 0x14) << 32
        assert (~mask & (1 << 64) - 1) + 1 == part.bar0_size
        for comp in part.companions:
            assert cfg(comp.bdf, 8) >> 8 == comp.class_code
        assert bench.pci_vendor_id == part.vendor_id  # what make_driver passes the driver
        assert "part" in bench.describe()


def test_endpoint_ids_of_the_part_reach_the_driver(x: VirtualXhci, part: PartProfile) -> None:
    assert x.quirks.endpoint_ids == part.endpoint_ids
    drv = started(x, part)
    roundtrip(x, drv, b"ids %d/%d" % part.endpoint_ids)
    assert drv.device_errors == []
    drv.stop()


# -- what the driver works out by itself ----------------------------------------------------------


def test_root_port_reset_is_learned_only_where_the_part_needs_it(
    x: VirtualXhci, part: PartProfile
) -> None:
    """Default options, no PCI ID: a part that only enumerates after a USB3 root-port reset
    gets exactly one, after DCPORTSC.CCS stayed 0 for PORT_RESET_AFTER; every other part
    connects by itself and its root ports are never touched."""
    fw = part.firmware
    handoff = (HANDOFF_TIMEOUT if fw.handoff_ms is None else fw.handoff_ms / 1000) * fw.bios_owned
    t0 = x.clock.monotonic()
    drv = started(x, part)
    took = x.clock.monotonic() - t0 - handoff  # from about DCE to Configured
    needs = part.quirks.enumerate_after_root_port_reset
    assert drv.counters.recoveries["root_port_reset"] == int(needs)
    assert x.dbc.root_port_reset_seen == needs
    if needs:
        assert took >= PORT_RESET_AFTER
    else:
        assert took < PORT_RESET_AFTER
    roundtrip(x, drv, b"learned")
    drv.stop()


def test_the_pci_vendor_id_decides_the_reset_at_once_as_linux_early_printk(
    x: VirtualXhci, part: PartProfile
) -> None:
    """With the PCI Vendor ID (what a bench reads from the function): Intel parts get the
    reset right after DCE (no waiting, no recovery counted); others are left alone."""
    drv = started(x, part, pci_vendor_id=part.vendor_id)
    intel = part.vendor_id == PCI_VENDOR_ID_INTEL
    assert x.dbc.root_port_reset_seen == intel
    assert drv.counters.recoveries["root_port_reset"] == 0
    roundtrip(x, drv, b"by vendor id")
    drv.stop()


def test_explicit_port_reset_false_is_obeyed(part: PartProfile) -> None:
    """``port_reset=False`` never resets: a part that needs it never enumerates (bounded)."""
    y = build_controller(part, strict=True)
    try:
        drv = DbcDriver(y.mmio, y.dma, clock=y.clock, port_reset=False)
        if part.quirks.enumerate_after_root_port_reset:
            with pytest.raises(DbcTimeout, match="DCR"):
                drv.start(timeout=1.0)
            assert not y.dbc.root_port_reset_seen
        else:
            drv.start(timeout=2.0)  # the broken BIOS alone costs the 1 s handoff timeout
            drv.stop()
        assert y.findings == []
    finally:
        y.close()


def test_64_bit_registers_are_dword_pairs_by_default(part: PartProfile) -> None:
    """Every part takes two dword writes, low then high (a part without 64-bit MMIO, Renesas,
    records MMIO-64BIT-UNSUPPORTED at a qword access: strict mode raises); DCERSTBA, DCCP and
    the DCERDP updates all go that way."""
    writes: list[tuple[int, int]] = []

    def sink(kind: str, /, **fields: Any) -> None:
        if kind == "mmio" and fields["op"] == "w":
            writes.append((fields["offset"] - part.dbc_offset, fields["width"]))

    y = build_controller(part, strict=True, trace=sink)
    try:
        drv = started(y, part)
        roundtrip(y, drv, b"dwords")
        drv.stop()
        assert y.findings == []
    finally:
        y.close()
    assert {width for _off, width in writes} == {32}
    for reg in (0x10, 0x18, 0x30):  # DCERSTBA, DCERDP, DCCP: low dword, then high dword
        at = writes.index((reg, 32))
        assert writes[at + 1] == (reg + 4, 32)


# -- the echo suite on every part --------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 1023, 1024, 1025, 65536, 65537, 300_000])
def test_echo_on_every_part(x: VirtualXhci, part: PartProfile, size: int) -> None:
    drv = started(x, part)
    data = bytes((i * 7 + size) & 0xFF for i in range(size))
    drv.write(data)
    assert host_read(x, drv, size) == data
    xfer = x.host.submit(data[::-1])
    got = b""
    while len(got) < size:
        got += drv.read(size - len(got), timeout=2.0)
    assert got == data[::-1]
    x.host.wait(xfer, timeout=1.0)
    drv.flush(timeout=1.0)
    assert drv.stop() == ()
    assert x.dma.stats()["live_bytes"] == 0


# -- the fault suite on every part -------------------------------------------------------------


@pytest.mark.parametrize("action", HOST_ACTIONS)
def test_host_side_loss_and_return_on_every_part(
    x: VirtualXhci, part: PartProfile, action: HostAction
) -> None:
    drv = started(x, part)
    roundtrip(x, drv, b"before")
    lose_host_and_return(x, drv, action)
    for i in range(2):
        roundtrip(x, drv, b"after %d" % i)
    assert sum(drv.counters.recoveries.values()) >= 1
    drv.stop()


@pytest.mark.parametrize("direction", ["in", "out"])
def test_host_halt_and_clear_on_every_part(
    x: VirtualXhci, part: PartProfile, direction: HostDirection
) -> None:
    """SET_FEATURE/CLEAR_FEATURE(ENDPOINT_HALT) from the host; on parts with the spurious STALL
    after ClearFeature the driver keeps its request queued (Linux 9044ad57b60b)."""
    drv = started(x, part)
    roundtrip(x, drv, b"before halt")
    x.host.halt(direction)
    for _ in range(5):
        drv.poll()
        x.advance(1000)
    x.host.clear_halt(direction)
    for _ in range(5):
        drv.poll()
        x.advance(1000)
    roundtrip(x, drv, b"after halt")
    if part.quirks.spurious_stall_on_clear_halt and direction == "out":
        assert drv.counters.spurious_stalls >= 1
    drv.stop()


def test_repeated_reconnects_on_every_part(x: VirtualXhci, part: PartProfile) -> None:
    drv = started(x, part, ring_trbs=16)
    reconnect_cycles(x, drv, 4)
    roundtrip(x, drv, b"still room")
    drv.stop()


def test_host_controller_reset_on_every_part(x: VirtualXhci, part: PartProfile) -> None:
    """The OS halts the controller (R/S = 0, waits for HCHalted) and resets it: on parts where
    HCRST kills the DbC the driver brings it up again."""
    drv = started(x, part)
    roundtrip(x, drv, b"before reset")
    op = read_register(x.mmio, 0, CAPLENGTH)
    usbcmd = op + OPERATIONAL_REGS.offset("USBCMD")
    usbsts = op + OPERATIONAL_REGS.offset("USBSTS")
    x.mmio.write32(usbcmd, USBCMD.replace(x.mmio.read32(usbcmd), RS=0))
    assert USBSTS.get(x.mmio.read32(usbsts), "HCH") == 1
    x.mmio.write32(usbcmd, USBCMD.encode(HCRST=1))
    settle(drv, x=x)
    if part.quirks.hcrst_kills_dbc:
        assert drv.counters.recoveries["dce_lost"] == 1
    roundtrip(x, drv, b"after reset")
    drv.stop()


def test_surprise_removal_on_every_part(x: VirtualXhci, part: PartProfile) -> None:
    drv = started(x, part)
    drv.write(b"in flight")
    x.surprise_remove()
    with pytest.raises(DbcSurpriseRemoval):
        drv.poll()
    (lost,) = drv.stop()
    assert lost.data == b"in flight"
    assert x.dma.stats()["live_bytes"] == 0


def test_default_quirks_differ_from_each_part_only_where_declared(part: PartProfile) -> None:
    declared = set(part.quirk_names)
    assert ("endpoint_ids" in declared) == (part.endpoint_ids != Quirks().endpoint_ids)
    assert ("no_64bit_mmio" in declared) == (not part.mmio64)


# -- the plugin's marker -------------------------------------------------------------------------


@pytest.mark.dbc_every_part
@pytest.mark.dbc_bench(free_running=False)
def test_marker_runs_once_per_part(dbc_part: str, dbc_bench: Any, dbc_driver: Any) -> None:
    assert dbc_bench.part.name == dbc_part
    dbc_driver.write(b"marked")
    host = dbc_bench.controller.host
    end = dbc_bench.clock.monotonic() + 2.0
    got = b""
    while len(got) < 6 and dbc_bench.clock.monotonic() < end:
        dbc_driver.poll()
        try:
            got += host.recv(64, timeout=0.001)
        except Exception:
            continue
    assert got == b"marked"
    assert dbc_bench.findings() == []
