"""Native environments: MMIO routing (exact offsets and widths), zero-copy DMA both ways, PCI
configuration mechanism #1, port handlers, printf decoding, data slots, ENV.py files, and the
virtual xHCI's findings carrying the C line that caused them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dbc_harness.allocator.emulated import EmulatedDmaSpace
from dbc_harness.drivers.native import (
    BindingError,
    DataSlot,
    Environment,
    EnvironmentFileError,
    KernelWindow,
    Machine,
    UnboundSymbols,
    UnhandledPort,
    UnmappedPhysical,
    bindings,
    load_environment,
)
from dbc_harness.drivers.native.cc import compile_object
from dbc_harness.fixtures.virtual import VirtualXhci
from dbc_harness.fixtures.virtual.findings import SpecViolation

C = Path(__file__).parent / "native_c"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

ENV = Environment(
    functions={
        **bindings.COMMON,
        "alloc_page": bindings.alloc_page,
        "free_page": bindings.free_page,
        "virt_to_phys": bindings.virt_to_phys,
        "my_hook": lambda m, a, b: a * b,
    },
    data={"kernel_vm": DataSlot(16, (0xC0FFEE).to_bytes(8, "little"))},
)


@pytest.fixture(scope="module")
def obj() -> Path:
    return compile_object(C / "env.c")


class RecordingMmio:
    """A fake BAR with every width; reads return a value derived from offset and width."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, int]] = []

    def read32(self, off: int) -> int:
        self.log.append(("read32", off, 0))
        return 0x1000 + off

    def read64(self, off: int) -> int:
        self.log.append(("read64", off, 0))
        return 0x2_0000_0000 + off

    def read16(self, off: int) -> int:
        self.log.append(("read16", off, 0))
        return 0x30 + off

    def read8(self, off: int) -> int:
        self.log.append(("read8", off, 0))
        return 0x4

    def write32(self, off: int, v: int) -> None:
        self.log.append(("write32", off, v))

    def write64(self, off: int, v: int) -> None:
        self.log.append(("write64", off, v))

    def write16(self, off: int, v: int) -> None:
        self.log.append(("write16", off, v))

    def write8(self, off: int, v: int) -> None:
        self.log.append(("write8", off, v))


@pytest.mark.parametrize("dma", ["identity", KernelWindow(0xFFFF_8880_0000_0000)])
def test_mmio_goes_to_the_bar_with_exact_offsets_and_widths(obj: Path, dma: object) -> None:
    bar = RecordingMmio()
    m = Machine(obj, ENV.extended(dma=dma), mmio=bar, bar_phys=0xFE00_0000, bar_size=0x10000)
    base = m.phys_to_virt(0xFE00_0000)
    m.call("mmio_widths", base)
    assert bar.log == [
        ("write32", 0x40, 0x11223344),
        ("write64", 0x48, 0x5566778899AABBCC),
        ("write16", 0x52, 0xBEEF),
        ("write8", 0x57, 0x7A),
        ("write32", 0x62, 0xCAFE),  # misaligned: passed through for the model to judge
    ]
    bar.log.clear()
    total = m.call("mmio_reads", base)
    assert bar.log == [("read32", 0x100, 0), ("read64", 0x108, 0), ("read16", 0x112, 0),
                       ("read8", 0x113, 0)]  # fmt: skip
    assert total == 0x1100 + 0x2_0000_0108 + 0x142 + 4
    assert [str(a) for a in m.mmio_accesses()][-1] == "r8 BAR0+0x113 = 0x4"


def test_dma_is_zero_copy_both_ways_with_the_virtual_controller(obj: Path) -> None:
    with VirtualXhci(strict=False) as x:
        m = Machine(obj, ENV, bench=x)
        phys = m.call("dma_page", 3)
        # the device reads what C wrote, through its own view of DMA space
        assert x.dma.device_read(phys, 4) == bytes([3, 4, 5, 6])
        view = x.dma.device_view(phys, 4096)
        view[100:104] = b"\xde\xad\xbe\xef"  # the device writes...
        assert m.read(m.phys_to_virt(phys) + 100, 4) == b"\xde\xad\xbe\xef"  # ...C sees it
        expected = 0
        for b in bytes(view):
            expected = (expected * 31 + b) & (2**64 - 1)
        assert m.call("checksum", m.phys_to_virt(phys), 4096) == expected
        # memory the Python side allocated is reachable by C too (mapped on first touch)
        buf = x.dma.alloc(64)
        buf.view[:3] = b"abc"
        assert m.call("checksum", m.phys_to_virt(buf.device_address), 3) == (
            (ord("a") * 31 + ord("b")) * 31 + ord("c")
        )
        m.call("release", m.phys_to_virt(phys))
        m.close()


def test_kernel_window_addresses(obj: Path) -> None:
    space = EmulatedDmaSpace(base=0x2_0000_0000, size=1 << 30)
    window = KernelWindow(0xFFFF_8880_0000_0000)
    m = Machine(obj, ENV.extended(dma=window), dma=space)
    phys = m.call("dma_page", 9)
    assert 0x2_0000_0000 <= phys < 0x2_4000_0000
    virt = m.phys_to_virt(phys)
    assert virt == window.base + phys and m.virt_to_phys(virt) == phys
    assert space.device_read(phys, 2) == bytes([9, 10])
    m.close()
    space.close()


def test_freed_dma_chunk_is_unmapped_and_static_memory_has_no_physical_address(
    obj: Path,
) -> None:
    space = EmulatedDmaSpace(base=0x2_0000_0000, size=1 << 30)
    m = Machine(obj, ENV, dma=space)
    phys = m.call("dma_page", 1)
    virt = m.phys_to_virt(phys)
    m.call("release", virt)
    assert space.stats()["chunks"] == 0
    from dbc_harness.drivers.native import InvalidMemoryAccess

    with pytest.raises(InvalidMemoryAccess) as info:
        m.call("checksum", virt, 4)  # a use after free is a fault, not stale memory
    assert info.value.address == virt
    with pytest.raises(UnmappedPhysical, match="not DMA memory"):
        m.call("static_phys")
    space.close()


class FakeConfig:
    """Two functions: an xHCI at 00:14.0 and something else at 03:00.1."""

    def __init__(self) -> None:
        self.space = {
            (0, 0x14, 0): bytearray(256),
            (3, 0, 1): bytearray(256),
        }
        xhci = self.space[(0, 0x14, 0)]
        xhci[0:4] = (0xA36D8086).to_bytes(4, "little")
        xhci[8:12] = (0x0C033010).to_bytes(4, "little")
        other = self.space[(3, 0, 1)]
        other[0:4] = (0x12345678).to_bytes(4, "little")
        other[8:12] = (0x02000000).to_bytes(4, "little")
        self.reads: list[tuple[int, int, int, int, int]] = []
        self.writes: list[tuple[int, int, int, int, int, int]] = []

    def read_config(self, bus: int, dev: int, fn: int, off: int, size: int) -> int | None:
        self.reads.append((bus, dev, fn, off, size))
        cfg = self.space.get((bus, dev, fn))
        if cfg is None:
            return None
        return int.from_bytes(cfg[off : off + size], "little")

    def write_config(self, bus: int, dev: int, fn: int, off: int, size: int, v: int) -> None:
        self.writes.append((bus, dev, fn, off, size, v))
        cfg = self.space.get((bus, dev, fn))
        if cfg is not None:
            cfg[off : off + size] = v.to_bytes(size, "little")


def test_pci_configuration_mechanism_1(obj: Path) -> None:
    cfg = FakeConfig()
    m = Machine(obj, ENV, pci=cfg)
    assert m.call("pci_read32", 0, 0x14, 0, 0) == 0xA36D8086
    assert m.call("pci_read16", 0, 0x14, 0, 2) == 0xA36D  # word at 0xCFE
    assert m.call("pci_read8", 0, 0x14, 0, 0xB) == 0x0C  # byte at 0xCFF
    assert cfg.reads[-1] == (0, 0x14, 0, 0xB, 1)
    assert m.call("pci_read32", 7, 1, 2, 0) == 0xFFFF_FFFF  # nobody there
    assert m.call("read_disabled") == 0xFFFF_FFFF  # enable bit clear: no cycle at all
    m.call("pci_write16", 3, 0, 1, 4, 0x0406)
    assert cfg.writes == [(3, 0, 1, 4, 2, 0x0406)]
    first = m.alloc(4)
    assert m.call("scan_xhci", first) == 1
    assert m.read_u32(first) == (0 << 8) | (0x14 << 3) | 0
    without = Machine(obj, ENV)
    assert without.call("pci_read32", 0, 0x14, 0, 0) == 0xFFFF_FFFF
    assert without.call("scan_xhci", without.alloc(4)) == 0


def test_other_ports_record_or_error_or_go_to_a_handler(obj: Path) -> None:
    m = Machine(obj, ENV)
    assert m.call("com1", m.cstring("hi")) == 0xFF
    assert [(a.op, a.port, a.value, a.handled_by) for a in m.ports.log] == [
        ("out", 0x3F8, ord("h"), "unclaimed"),
        ("out", 0x3F8, ord("i"), "unclaimed"),
        ("in", 0x3FD, 0xFF, "unclaimed"),
    ]

    class Serial:
        def __init__(self) -> None:
            self.text = ""

        def port_read(self, port: int, size: int) -> int:
            return 0x60

        def port_write(self, port: int, size: int, value: int) -> None:
            self.text += chr(value)

    serial = Serial()
    s = Machine(obj, ENV.extended(ports={0x3F8: serial, 0x3FD: serial}))
    assert s.call("com1", s.cstring("ok")) == 0x60 and serial.text == "ok"
    strict = Machine(obj, ENV.extended(unknown_ports="error"))
    with pytest.raises(UnhandledPort, match="out8 0x6f to I/O port 0x3f8") as info:
        strict.call("com1", strict.cstring("o"))
    # native_location: added by the runner to an error raised in native code
    assert info.value.native_location.function.startswith("com1+0x")  # type: ignore[attr-defined]


def test_printf_family_decoding(obj: Path) -> None:
    m = Machine(obj, ENV)
    assert m.call("log_all") == 6
    assert m.log == [
        "d=-5 i=42 u=4000000000 x=beef X=BEEF o=10",
        "[   42|42   |00042|+42| 42]",
        "-1 18446744073709551615 feed 1122334455667788 7 ff 4464",
        "str|     right|left  |tr|Q|%|0x1000|(nil)",
        "0xff 010 0003.142    7 9  | (null)",
        "1 2 3 4 5 6 7 8",
    ]


def test_data_slots_and_decorated_bindings(obj: Path) -> None:
    m = Machine(obj, ENV)
    assert m.call("vm_magic") == 0xC0FFEE
    assert m.read_u64(m.symbol("kernel_vm") + 8) == 1
    env = ENV.extended()

    @env.function("my_hook")
    def hook(m: Machine, a: int, b: int) -> int:
        return a - b

    assert Machine(obj, env).call("use_hook") == 0xFFFF_FFFF_FFFF_FFFF  # 6 - 7 in rax
    with pytest.raises(BindingError, match="first parameter"):
        Environment(functions={"f": lambda: 0})
    with pytest.raises(BindingError, match="both as function and data"):
        Environment(functions={"x": bindings.nop}, data={"x": 4})


def test_env_file(tmp_path: Path, obj: Path) -> None:
    env_py = tmp_path / "ENV.py"
    env_py.write_text(
        "from dbc_harness.drivers.native import Environment, bindings\n"
        "ENV = Environment(functions={**bindings.COMMON, 'alloc_page': bindings.alloc_page,\n"
        "    'free_page': bindings.free_page, 'virt_to_phys': bindings.virt_to_phys},\n"
        "    data={'kernel_vm': 16})\n"
        "@ENV.function()\n"
        "def my_hook(m, a, b):\n"
        "    return a + b\n"
    )
    env = load_environment(env_py)
    assert Machine(obj, env).call("use_hook") == 13
    bad = tmp_path / "BAD.py"
    bad.write_text("ENV = 3\n")
    with pytest.raises(EnvironmentFileError, match="defines no ENV"):
        load_environment(bad)
    broken = tmp_path / "BROKEN.py"
    broken.write_text("import nowhere_module_xyz\n")
    with pytest.raises(EnvironmentFileError, match="ModuleNotFoundError"):
        load_environment(broken)
    with pytest.raises(EnvironmentFileError, match="no such"):
        load_environment(tmp_path / "missing.py")
    with pytest.raises(UnboundSymbols, match="my_hook"):
        Machine(obj, Environment(functions={k: v for k, v in ENV.functions.items()
                                            if k != "my_hook"}, data=ENV.data))  # fmt: skip


SUBDWORD = """
void touch(volatile unsigned char *bar)
{
	*(volatile unsigned int *)(bar + 0x8720) = 0;
	*(volatile unsigned char *)(bar + 0x8720) = 1;
}
"""


def test_findings_carry_the_c_line_and_strict_mode_raises_with_it() -> None:
    obj = compile_object(SUBDWORD, name="subdword")
    with VirtualXhci(strict=False) as x:
        m = Machine(obj, Environment(), bench=x)
        m.call("touch", m.bar_virt)
        assert [f.rule for f in x.findings] == ["MMIO-SUBDWORD"]
        f = x.findings[0]
        assert f.origin is not None and f.origin.startswith("subdword.c:5 (touch+0x")
        assert "[driver code: subdword.c:5" in str(f)
    with VirtualXhci(strict=True) as x:
        m = Machine(obj, Environment(), bench=x)
        with pytest.raises(SpecViolation) as info:
            m.call("touch", m.bar_virt)
        assert info.value.finding.origin is not None
        assert info.value.finding.origin.startswith("subdword.c:5")
        # native_location: added by the runner to an error raised in native code
        assert info.value.native_location.source == "subdword.c:5"  # type: ignore[attr-defined]


def test_a_moved_bar_leaves_its_old_place(obj: Path) -> None:
    bar = RecordingMmio()
    m = Machine(obj, ENV, mmio=bar, bar_phys=0xFE00_0000)
    m.attach_mmio(bar, 0xFD00_0000, 0x10000)
    assert m.bar_virt == 0xFD00_0000
    m.call("mmio_reads", m.bar_virt)
    assert bar.log[0] == ("read32", 0x100, 0)
    from dbc_harness.drivers.native import InvalidMemoryAccess

    with pytest.raises(InvalidMemoryAccess) as info:
        m.call("mmio_reads", 0xFE00_0000)
    assert info.value.address == 0xFE00_0100
