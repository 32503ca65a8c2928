"""Native drivers on the claimed-controller benches (``hw:BDF``, and ``qemu`` from the host).

``hw:BDF`` runs a C driver the way ``run --driver`` does: :class:`HardwareBench` claims the
controller (binding layer), and :class:`NativeDbcDriver` runs the object with its MMIO forwarded
to the claim's BAR0 (``claim.mmio``) and its DMA memory allocated from the claim's DMA space
(``claim.dma``), mapped zero-copy into the emulated CPU. Here the claim is a fake standing in
for the binding layer (no sysfs, no VFIO): its BAR0 is the virtual xHCI's, its DMA space a real
:class:`IovaDmaSpace` over a recording IOMMU mapper, as a VFIO claim's is. So the wiring from
bench spec to C code to controller and back is proven on any machine; the ``hardware`` test
does the same on a real controller (``--xhci BDF``).

Also here: the C host path of ``reference/xhci_noop.c`` on the virtual xHCI (its capability
walk, its bounded waits), and what ``run --bench qemu --driver`` hands to the guest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from dbc_harness.allocator.iova import IovaDmaSpace
from dbc_harness.drivers.clock import REAL_CLOCK
from dbc_harness.drivers.dbc import DbcState, DbcTimeout
from dbc_harness.drivers.native.driver import NativeDbcDriver
from dbc_harness.drivers.native.runner import ManualClock, as_signed
from dbc_harness.drivers.native.xhci_noop import NativeXhciProbe
from dbc_harness.drivers.xhci.host import probe_capabilities
from dbc_harness.fixtures import bench as bench_module
from dbc_harness.fixtures.bench import HardwareBench, HostUnavailable, open_bench
from dbc_harness.fixtures.virtual import VirtualXhci
from dbc_harness.harness.app.kernel_run import guest_argv
from dbc_harness.harness.app.options import SessionOptions
from dbc_harness.harness.app.session import run_session
from dbc_harness.harness.binding.claim import ClaimInfo

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
BDF = "0000:00:14.0"
DBC = 0x8700  # the virtual xHCI's Debug Capability
DCCTRL, DCCP = DBC + 0x20, DBC + 0x30
FOUR_GIB = 1 << 32


# -- a claim without sysfs ---------------------------------------------------------------------


@dataclass
class RecordingMapper:
    """An IOMMU that remembers what is mapped (the DmaMapper protocol, as VfioDmaMapper)."""

    ac64: bool
    iova_pgsize: int = 4096
    reserved: tuple[tuple[int, int], ...] = ()
    live: dict[int, int] = field(default_factory=dict)
    mapped: list[int] = field(default_factory=list)
    address_limit: int = 0
    iova_base: int = 0

    def __post_init__(self) -> None:
        # VfioDmaMapper's choices: IOVAs above RAM with AC64, from 1 MiB below 4 GiB without
        self.address_limit = FOUR_GIB + (1 << 36) if self.ac64 else FOUR_GIB
        self.iova_base = FOUR_GIB if self.ac64 else 1 << 20

    def map(self, vaddr: int, iova: int, size: int) -> None:
        self.live[iova] = size
        self.mapped.append(iova)

    def unmap(self, iova: int, size: int) -> None:
        assert self.live.pop(iova) == size

    def maps(self, address: int) -> bool:
        return any(iova <= address < iova + size for iova, size in self.live.items())


class FakeClaim:
    """What ``claim(bdf, ...)`` gives the hardware bench: ``mmio``, ``dma``, ``info``; a
    context manager that gives everything back (here: stops the model, closes the space)."""

    def __init__(self, bdf: str, ac64: bool, **options: Any) -> None:
        self.bdf = bdf
        self.options = options
        self.mapper = RecordingMapper(ac64)
        self.dma = IovaDmaSpace(self.mapper, iova_base=self.mapper.iova_base)
        self.controller = VirtualXhci(dma=self.dma, ac64=ac64, strict=True)
        self._free = self.controller.run_free()  # real time, as silicon
        self._free.__enter__()
        self.mmio = self.controller.mmio
        self.info = ClaimInfo(
            bdf=bdf, mode="vfio", vfio_api="group", original_driver="xhci_hcd",
            iommu_group=7, bar0_size=0x10000, ac64=ac64, dma_limit=None if ac64 else FOUR_GIB,
            dbc_offset=DBC, has_function_reset=False,
        )  # fmt: skip
        self.released = False
        self.findings: list[Any] = []

    def __enter__(self) -> FakeClaim:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.released = True
        self._free.__exit__(None, None, None)
        self.findings = list(self.controller.findings)
        self.controller.close()
        self.dma.close()


@pytest.fixture(params=[True, False], ids=["ac64", "ac64-0"])
def fake_claims(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[FakeClaim]:
    """Every ``claim()`` the hardware bench makes gives a FakeClaim (AC64 = 1: IOVAs from
    4 GiB; AC64 = 0: IOVAs from 1 MiB, where the emulator's own regions are)."""
    made: list[FakeClaim] = []

    def fake_claim(bdf: str, **options: Any) -> FakeClaim:
        made.append(FakeClaim(bdf, request.param, **options))
        return made[-1]

    monkeypatch.setattr(bench_module, "claim", fake_claim)
    return made


def test_hw_bench_runs_the_c_driver_on_the_claims_bar0_and_dma(
    fake_claims: list[FakeClaim],
) -> None:
    with open_bench(f"hw:{BDF}", mode="vfio") as bench:
        assert isinstance(bench, HardwareBench)
        (fake,) = fake_claims
        assert (fake.bdf, fake.options["mode"]) == (BDF, "vfio")
        drv = NativeDbcDriver.on_bench(bench, "reference")
        m = drv.machine
        assert m.dma is fake.dma and drv.clock is REAL_CLOCK
        drv.start(timeout=5.0)
        assert drv.state is DbcState.CONFIGURED
        # the C driver's MMIO reached the claim's BAR0: DCE reads 1 there
        assert fake.mmio.read32(DCCTRL) >> 31 == 1
        # its DMA memory is the claim's: the DbC context pointer the C code wrote is a live
        # buffer of the claim's space, at an IOVA the IOMMU mapper mapped
        dccp = fake.mmio.read64(DCCP)
        buf, offset = fake.dma.lookup(dccp)
        assert buf.space is fake.dma and fake.mapper.maps(dccp)
        assert (dccp >= FOUR_GIB) is fake.info.ac64
        # zero-copy: the bytes C sees at that address are the chunk's bytes, both ways
        virt = m.phys_to_virt(dccp)
        view = m.view(virt, 64)
        assert view is not None and bytes(view) == bytes(buf.view[offset : offset + 64])
        probe = m.dma_alloc(4096)
        probe.buffer.view[:4] = b"\x11\x22\x33\x44"
        assert m.read(probe.virt, 4) == b"\x11\x22\x33\x44"
        m.write(probe.virt + 8, b"back")
        assert bytes(probe.buffer.view[8:12]) == b"back"
        m.dma_free(probe.virt)
        # data both ways through the claimed controller's debug host
        message = b"target -> host over the claim"
        drv.write(message)
        drv.flush(timeout=5.0)
        assert fake.controller.host.recv(len(message), timeout=2.0) == message
        fake.controller.host.submit(b"host -> target")
        assert drv.read(64, timeout=2.0) == b"host -> target"
        assert drv.stop() == ()
        assert fake.mmio.read32(DCCTRL) >> 31 == 0
        assert fake.dma.stats()["live_bytes"] == 0
        drv.close()
    assert fake.released and fake.findings == []
    assert fake.mapper.live == {}  # the claim's DMA space gave every IOVA back


def test_run_driver_on_hw_bench_goes_through_the_claim(fake_claims: list[FakeClaim]) -> None:
    """``run --bench hw:BDF --driver reference``: the session makes the native driver on the
    claimed controller; the debug host is at the far end of the cable (not reachable here)."""
    steps: list[str] = []
    options = SessionOptions(
        bench=f"hw:{BDF}", native_driver="reference", echo_sizes=[], throughput_bytes=0,
        timeout=5.0,
    )  # fmt: skip
    result = run_session(options, on_step=steps.append)
    (fake,) = fake_claims
    assert fake.options == {"mode": "auto", "unsafe": False, "force": False, "trace": None}
    assert result.bench["bench"] == f"hw:{BDF}"
    assert result.bench["driver"].startswith("native dbc-")
    assert result.bench["Debug Capability"] == f"at BAR0 + 0x{DBC:x}"
    assert "CONFIGURED" in [new for _, _, new in result.transitions]
    assert result.final_state == "DISABLED"
    assert result.counters["doorbells"] > 0
    assert "debug host" in result.skipped
    assert result.restored and fake.released and fake.findings == []
    assert "giving everything back" in steps


# -- the C host path (reference/xhci_noop.c) ---------------------------------------------------


def test_c_capability_walk_agrees_with_the_python_walk() -> None:
    x = VirtualXhci(strict=True)
    try:
        with NativeXhciProbe(x.mmio, x.dma, x.clock) as probe:
            walk = probe.cap_walk()
        assert walk.status_name == "OK" and walk.dbc_offset == DBC
        assert walk.dbc_status == f"Debug Capability at BAR0 + 0x{DBC:x}"
        assert walk.extended == probe_capabilities(x.mmio).extended
        assert walk.total == len(walk.extended) >= 4
        assert sorted(walk.protocols()) == [("USB ", 0x0200, 1, 4), ("USB ", 0x0300, 5, 4)]
        assert f"xhci: xECP +0x{DBC:x} ID 10" in probe.log
        assert list(x.findings) == []
    finally:
        x.close()


class RegisterFile:
    """BAR0 as a plain array of dwords (for walks the virtual xHCI cannot be made to have)."""

    def __init__(self, size: int = 0x4000) -> None:
        self.size = size
        self.dwords = [0] * (size // 4)

    def read32(self, offset: int) -> int:
        return self.dwords[offset // 4]

    def write32(self, offset: int, value: int) -> None:
        self.dwords[offset // 4] = value

    def read64(self, offset: int) -> int:
        return self.read32(offset) | self.read32(offset + 4) << 32

    def write64(self, offset: int, value: int) -> None:
        self.write32(offset, value & 0xFFFF_FFFF)
        self.write32(offset + 4, value >> 32)


def test_c_capability_walk_bounds_a_list_that_leaves_bar0_and_reports_all_ones() -> None:
    regs = RegisterFile()
    regs.write32(0x10, (0x20 // 4) << 16)  # HCCPARAMS1.xECP
    for off in range(0x20, 0x4000, 0x3FC):  # each entry points 0x3FC further, out of BAR0
        regs.write32(off, 0xC0 | (0xFF << 8))
    with NativeXhciProbe(regs, None, ManualClock()) as probe:  # a walk needs no DMA
        walk = probe.cap_walk()
        assert walk.status_name == "DBC_EINVAL"
        assert walk.broken_at > 0x4000 - 16 and walk.total == 17
        regs.dwords = [0xFFFF_FFFF] * len(regs.dwords)  # the device went away
        assert probe.cap_walk().status_name == "DBC_EREMOVED"


def test_c_no_op_without_a_command_ring_times_out_bounded_and_gives_everything_back() -> None:
    """The virtual xHCI models the DbC, not the host's command ring: no Command Completion
    Event ever comes. The C code's bounded wait ends in DBC_ETIMEDOUT (2 s of the bench's
    virtual time), leaves the controller halted and reset, and frees its memory."""
    x = VirtualXhci(strict=True)
    try:
        with NativeXhciProbe(x.mmio, x.dma, x.clock) as probe:
            t0 = x.clock.monotonic()
            report = probe.no_op(3)
            waited = x.clock.monotonic() - t0
        assert report.status_name == "DBC_ETIMEDOUT"
        assert report.running and report.halted and report.completions == ()
        assert 2.0 <= waited < 10.0
        assert "xhci: no Command Completion Event for the No Op at " in probe.log[-1]
        assert x.mmio.read32(0x80 + 4) & 1  # USBSTS.HCH
        assert x.dma.stats()["live_bytes"] == 0
        assert list(x.findings) == []
    finally:
        x.close()


def test_c_no_op_refuses_more_commands_than_its_report_holds() -> None:
    x = VirtualXhci(strict=True)
    try:
        with NativeXhciProbe(x.mmio, x.dma, x.clock) as probe:
            assert probe.no_op(65).status_name == "DBC_EINVAL"
            assert as_signed(probe.machine.call("xhci_noop", 0, 0x4000, 1, 0), 32) == -8
    finally:
        x.close()


# -- qemu from the host ------------------------------------------------------------------------


def test_qemu_run_hands_the_host_compiled_driver_to_the_guest() -> None:
    options = SessionOptions(
        bench="qemu", native_driver="reference", native_env="drivers/native/reference/env.py",
        native_entry="my_init",
    )  # fmt: skip
    argv = guest_argv(options, as_json=False)
    driver = Path(argv[argv.index("--driver") + 1])
    assert driver.is_absolute() and driver.suffix == ".o" and driver.is_file()
    env = Path(argv[argv.index("--env") + 1])
    assert env == (Path.cwd() / "drivers/native/reference/env.py").resolve()
    assert argv[argv.index("--entry") + 1] == "my_init"
    assert "--driver" not in guest_argv(SessionOptions(bench="qemu"), as_json=False)


# -- a real controller -------------------------------------------------------------------------


@pytest.mark.hardware
def test_reference_driver_on_a_claimed_controller(dbc_bench: Any) -> None:
    """``--xhci BDF``: the C code on silicon from user space. Its capability walk reads what
    the Python walk reads; its No Op Commands complete; the DbC comes up (DCE = 1, context in
    the claim's DMA space) and goes down cleanly; data is echoed when the debug host is
    reachable from this machine."""
    bench = dbc_bench
    caps = probe_capabilities(bench.mmio)
    with NativeXhciProbe(bench.mmio, bench.dma, bench.clock) as probe:
        walk = probe.cap_walk()
        assert walk.extended == caps.extended and walk.dbc_offset == caps.dbc_offset
        if caps.dbc_offset is None:
            assert walk.status_name == "DBC_ENODEV"
            pytest.skip(f"{bench.name}: no Debug Capability on this controller")
        report = probe.no_op(5)
        assert report.status_name == "OK", probe.log
        assert all(c.success for c in report.completions)
    drv = NativeDbcDriver.on_bench(bench, "reference")
    m = drv.machine
    assert m.bar_phys is not None  # the bench gave it BAR0
    dcctrl, dccp_at = caps.dbc_offset + 0x20, caps.dbc_offset + 0x30
    try:
        # bring-up without waiting for a debug host (dbc.h: wait_us 0), then back down
        assert as_signed(m.call("dbc_init", m.bar_phys, 0, 0), 32) == 0, drv.log
        assert m.call("dbc_state") >= 2  # ENABLED or later
        assert bench.mmio.read32(dcctrl) >> 31 == 1  # DCCTRL.DCE, on the claimed BAR0
        assert bench.dma.lookup(bench.mmio.read64(dccp_at))[0].space is bench.dma
        assert as_signed(m.call("dbc_stop"), 32) == 0
        assert bench.mmio.read32(dcctrl) >> 31 == 0
        # with a debug host at the far end of the cable: configured, and an echo when that
        # host is this machine
        try:
            drv.start(timeout=5.0)
        except DbcTimeout:
            assert bench.mmio.read32(dcctrl) >> 31 == 0  # gave up cleanly: DCE = 0
            return
        try:
            pipe = bench.host_pipe(timeout=5.0)
        except HostUnavailable:
            return
        pipe.send(b"ping from the debug host", timeout=5.0)
        assert drv.read(64, timeout=5.0) == b"ping from the debug host"
        drv.write(b"pong from the target")
        assert pipe.recv(64, timeout=5.0) == b"pong from the target"
    finally:
        drv.close()
    assert bench.mmio.read32(dcctrl) >> 31 == 0
